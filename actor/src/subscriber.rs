//! The weight stream from the learner: assembles versions and publishes each complete one
//! as a ready-to-use policy; reconnects with backoff when the stream breaks.

use crate::error::ActorError;
use crate::learner_version::LearnerVersion;
use crate::metrics::ActorMetrics;
use policy::{ModelConfig, Policy, Weights};
use proto::learner_client::LearnerClient;
use proto::transport::Security;
use proto::weights::{Assembler, WeightsError};
use proto::weights_chunk::Part;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A complete version: its number and the policy over its weights.
pub type Versioned = Arc<(u64, Policy)>;

/// Builds the policy of a received version.
fn build(
    cfg: &ModelConfig,
    tensors: Vec<proto::weights::NamedTensor>,
) -> Result<Policy, ActorError> {
    let mut weights = Weights::new();
    for t in tensors {
        let tensor = candle_core::Tensor::from_vec(t.data, t.shape, &candle_core::Device::Cpu)?;
        weights.insert(t.name, tensor);
    }
    Ok(Policy::new(cfg, &weights)?)
}

/// Follows the learner's weight stream until `stop`; publishes versions into `slot` and the
/// newest announced version (header seen) into `announced`, and counts what it receives.
/// Follows the learner to a new address (`learner_addr`, from the coordinator) too; a
/// restarted learner behind the version held here sends its own at once, and that one is
/// taken, lower or not.
pub(crate) async fn follow(
    mut learner_addr: watch::Receiver<String>,
    security: Security,
    cfg: ModelConfig,
    slot: watch::Sender<Option<Versioned>>,
    announced: Arc<LearnerVersion>,
    metrics: Arc<ActorMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut last_addr = learner_addr.borrow().clone();
    loop {
        if *stop.borrow() {
            return;
        }
        let after = slot.borrow().as_ref().map_or(0, |v| v.0);
        let addr = learner_addr.borrow_and_update().clone();
        if addr != last_addr {
            tracing::info!(from = %last_addr, to = %addr, "the learner moved; following it");
            last_addr = addr.clone();
        }
        let mut received = false;
        let result = async {
            let channel = security.channel(&addr).await.map_err(|e| e.to_string())?;
            let mut client =
                LearnerClient::new(channel).max_decoding_message_size(proto::MAX_MESSAGE_BYTES);
            let mut stream = client
                .subscribe_weights(proto::SubscribeWeightsRequest {
                    after_version: after,
                    member_id: String::new(),
                })
                .await
                .map_err(|s| s.message().to_string())?
                .into_inner();
            let mut asm = Assembler::new();
            let mut header_at = std::time::Instant::now();
            while let Some(chunk) = stream
                .message()
                .await
                .map_err(|s| s.message().to_string())?
            {
                match &chunk.part {
                    Some(Part::Header(_)) => header_at = std::time::Instant::now(),
                    Some(Part::Tensor(t)) => {
                        metrics.weight_bytes_received.inc_by(t.data.len() as u64);
                    }
                    _ => {}
                }
                let done = asm.push(chunk).map_err(|e| {
                    metrics.reject(match e {
                        WeightsError::Checksum { .. } => "bad_checksum",
                        _ => "bad_weights",
                    });
                    e.to_string()
                })?;
                if let Some(v) = asm.receiving() {
                    announced.announced(v);
                }
                if let Some((version, tensors)) = done {
                    let policy = build(&cfg, tensors).map_err(|e| {
                        metrics.reject("weights_shape");
                        e.to_string()
                    })?;
                    tracing::debug!(version, "received weights");
                    // Counted before the version is handed over, so whoever sees it in the
                    // slot sees it counted too.
                    metrics.weights_version.set(version as i64);
                    metrics.weight_versions_received.inc();
                    metrics
                        .weight_receive_seconds
                        .observe(header_at.elapsed().as_secs_f64());
                    slot.send_replace(Some(Arc::new((version, policy))));
                    received = true;
                }
            }
            Ok::<(), String>(())
        };
        // Some(true): the learner moved; Some(false): the heartbeats ended (stopping).
        let moved = tokio::select! {
            r = result => {
                if let Err(e) = r {
                    tracing::warn!(learner = %addr, error = %e, retry_in = ?backoff, "weight stream broke; reconnecting");
                }
                None
            }
            changed = learner_addr.changed() => Some(changed.is_ok()),
            _ = stop.wait_for(|s| *s) => return,
        };
        match moved {
            Some(true) => continue,
            Some(false) => {
                let _ = stop.wait_for(|s| *s).await;
                return;
            }
            None => {}
        }
        if received {
            backoff = Duration::from_millis(50);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
#[path = "subscriber_tests.rs"]
mod tests;
