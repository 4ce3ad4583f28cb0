//! The weight stream as bad input arrives on it: a chunk whose checksum fails and a version
//! whose tensors do not fit the model are refused and counted, the actor keeps what it had,
//! reconnects, and takes the next good version.

use super::*;
use proto::learner_server::{Learner, LearnerServer};
use proto::weights::{encode, NamedTensor};
use proto::WeightsChunk;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

type Chunks = Pin<Box<dyn Stream<Item = Result<WeightsChunk, Status>> + Send>>;

/// A learner that answers its n-th subscription with the n-th stream of `streams` (the last
/// one again after that).
struct ScriptedLearner {
    streams: Vec<Vec<WeightsChunk>>,
    calls: AtomicUsize,
}

#[tonic::async_trait]
impl Learner for ScriptedLearner {
    type PushRolloutsStream = Pin<Box<dyn Stream<Item = Result<proto::PushAck, Status>> + Send>>;
    type SubscribeWeightsStream = Chunks;

    async fn push_rollouts(
        &self,
        _: Request<Streaming<proto::RolloutGroup>>,
    ) -> Result<Response<Self::PushRolloutsStream>, Status> {
        Err(Status::unimplemented("weights only"))
    }

    async fn subscribe_weights(
        &self,
        _: Request<proto::SubscribeWeightsRequest>,
    ) -> Result<Response<Chunks>, Status> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let chunks = self.streams[n.min(self.streams.len() - 1)].clone();
        Ok(Response::new(Box::pin(tokio_stream::iter(
            chunks.into_iter().map(Ok),
        ))))
    }
}

fn tensors(cfg: &ModelConfig, seed: u64) -> Vec<NamedTensor> {
    let weights = policy::random_weights(cfg, seed, &candle_core::Device::Cpu).unwrap();
    let mut out: Vec<NamedTensor> = weights
        .iter()
        .map(|(name, t)| NamedTensor {
            name: name.clone(),
            shape: t.dims().to_vec(),
            data: t.flatten_all().unwrap().to_vec1().unwrap(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_misshapen_weights_are_refused_and_the_next_good_version_taken() {
    let vocab = policy::tokenizer::char_tokenizer().vocab_size();
    let cfg = ModelConfig::tiny(vocab, 16, 1, 2, 1);
    let other = ModelConfig::tiny(vocab, 32, 1, 2, 1);
    let mut corrupt = encode(1, 0, &tensors(&cfg, 1), 256);
    let flipped = corrupt
        .iter_mut()
        .find_map(|c| match &mut c.part {
            Some(Part::Tensor(t)) => Some(t),
            _ => None,
        })
        .expect("a tensor chunk");
    let mut data = flipped.data.to_vec();
    data[0] ^= 0xFF;
    flipped.data = data.into();
    let misshapen = encode(2, 0, &tensors(&other, 2), 1 << 20);
    let good = encode(3, 0, &tensors(&cfg, 3), 1 << 20);
    let learner = ScriptedLearner {
        streams: vec![corrupt, misshapen, good],
        calls: AtomicUsize::new(0),
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LearnerServer::new(learner))
            .serve_with_incoming(incoming),
    );

    let (_addr_tx, addr_rx) = watch::channel(url);
    let (slot_tx, mut slot_rx) = watch::channel::<Option<Versioned>>(None);
    let stop = Shutdown::new();
    let metrics = Arc::new(ActorMetrics::new());
    let subscription = Subscription {
        learner_addr: addr_rx,
        security: Security::default(),
        cfg,
        announced: LearnerVersion::new(0),
        metrics: metrics.clone(),
        stop: stop.clone(),
    };
    let follower = tokio::spawn(follow(subscription, slot_tx));
    let got = tokio::time::timeout(
        Duration::from_secs(30),
        slot_rx.wait_for(|v| v.as_ref().is_some_and(|v| v.0 == 3)),
    )
    .await
    .expect("the good version arrives after the bad ones")
    .map(|v| v.as_ref().map(|v| v.0))
    .unwrap();
    assert_eq!(got, Some(3));
    let text = metrics.render();
    for reason in ["bad_checksum", "weights_shape"] {
        let line = format!("oxrl_rejected_total{{reason=\"{reason}\"}} 1");
        assert!(text.contains(&line), "{line} not in:\n{text}");
    }
    assert!(
        text.contains("oxrl_actor_weight_versions_received_total 1"),
        "{text}"
    );
    stop.trigger();
    tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("the follower stops")
        .unwrap();
}
