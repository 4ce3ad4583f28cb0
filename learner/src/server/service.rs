//! The tonic `Learner` service: PushRollouts (acknowledged per group, in order) and
//! SubscribeWeights (every new version, chunked), plus gRPC health; TLS, the bearer-token
//! check (health exempt) and keepalive come from `proto::transport::Security`.

use super::metrics::SubscriberGuard;
use super::{intake, Shared};
use crate::error::{LearnerError, Result};
use proto::learner_server::{Learner, LearnerServer};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

type BoxStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;

struct LearnerService {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl Learner for LearnerService {
    type PushRolloutsStream = BoxStream<proto::PushAck>;
    type SubscribeWeightsStream = BoxStream<proto::WeightsChunk>;

    async fn push_rollouts(
        &self,
        request: Request<Streaming<proto::RolloutGroup>>,
    ) -> std::result::Result<Response<Self::PushRolloutsStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            while let Some(msg) = incoming.next().await {
                let ack = match msg {
                    Ok(group) => intake::admit(&shared, group).await,
                    Err(status) => {
                        // tonic refuses a message over the size limit with OutOfRange.
                        if status.code() == tonic::Code::OutOfRange {
                            shared.metrics.reject("oversized");
                        }
                        Err(status)
                    }
                };
                let failed = ack.is_err();
                if tx.send(ack).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn subscribe_weights(
        &self,
        request: Request<proto::SubscribeWeightsRequest>,
    ) -> std::result::Result<Response<Self::SubscribeWeightsStream>, Status> {
        let after = request.get_ref().after_version;
        let held_lineage = request.get_ref().lineage;
        let mut versions = self.shared.weights.subscribe();
        let (tx, rx) = mpsc::channel(64);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let metrics = &shared.metrics;
            let _connected = SubscriberGuard::new(&metrics.subscribers);
            let mut sent: Option<u64> = None;
            // What the subscriber holds (version, lineage): a delta is sent only against it.
            let mut held = (held_lineage != 0).then_some((after, held_lineage));
            loop {
                let current = versions.borrow_and_update().clone();
                let newer = match sent {
                    // A subscriber ahead of us holds weights of a learner that was lost (we
                    // restarted from a checkpoint): it gets ours at once.
                    // So does one holding weights of another lineage.
                    None => {
                        after == 0
                            || current.version != after
                            || (held_lineage != 0 && held_lineage != current.lineage)
                    }
                    Some(v) => current.version > v,
                };
                if newer {
                    let sending = std::time::Instant::now();
                    let part = current.for_subscriber(held);
                    for chunk in part.chunks {
                        if tx.send(Ok(chunk.clone())).await.is_err() {
                            return;
                        }
                    }
                    metrics
                        .weight_send_seconds
                        .observe(sending.elapsed().as_secs_f64());
                    metrics.weight_sent_bytes.inc_by(part.bytes as u64);
                    metrics.weight_versions_sent.inc();
                    if part.delta {
                        metrics.weight_deltas_sent.inc();
                    }
                    sent = Some(current.version);
                    held = Some((current.version, current.lineage));
                }
                // A subscriber that goes away between versions stops counting at once.
                tokio::select! {
                    changed = versions.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Serves until `stop` is set.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    security: proto::transport::Security,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut server = security
        .server()
        .map_err(|e| LearnerError::Server(e.to_string()))?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<LearnerServer<LearnerService>>().await;
    let service = LearnerServer::new(LearnerService { shared })
        .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(proto::MAX_MESSAGE_BYTES);
    let until = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    server
        .add_service(health_service)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), until)
        .await
        .map_err(|e| LearnerError::Server(e.to_string()))
}
