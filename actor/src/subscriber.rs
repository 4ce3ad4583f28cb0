//! The weight stream from the learner: assembles versions and publishes each complete one
//! as a ready-to-use policy; reconnects with backoff when the stream breaks.

use crate::error::ActorError;
use policy::{ModelConfig, Policy, Weights};
use proto::learner_client::LearnerClient;
use proto::transport::Security;
use proto::weights::Assembler;
use std::sync::atomic::{AtomicU64, Ordering};
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
/// newest announced version (header seen) into `announced`.
pub async fn follow(
    learner_addr: String,
    security: Security,
    cfg: ModelConfig,
    slot: watch::Sender<Option<Versioned>>,
    announced: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if *stop.borrow() {
            return;
        }
        let after = slot.borrow().as_ref().map_or(0, |v| v.0);
        let result = async {
            let channel = security
                .channel(&learner_addr)
                .await
                .map_err(|e| e.to_string())?;
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
            while let Some(chunk) = stream
                .message()
                .await
                .map_err(|s| s.message().to_string())?
            {
                let done = asm.push(chunk).map_err(|e| e.to_string())?;
                if let Some(v) = asm.receiving() {
                    announced.fetch_max(v, Ordering::Relaxed);
                }
                if let Some((version, tensors)) = done {
                    let policy = build(&cfg, tensors).map_err(|e| e.to_string())?;
                    tracing::debug!(version, "received weights");
                    slot.send_replace(Some(Arc::new((version, policy))));
                }
            }
            Ok::<(), String>(())
        };
        tokio::select! {
            r = result => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "weight stream broke; reconnecting");
                }
            }
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
