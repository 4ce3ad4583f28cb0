//! The weight stream from the learner: assembles versions (a delta onto the version held)
//! and publishes each complete one as a ready-to-use policy; reconnects with backoff when the
//! stream breaks.

use crate::error::ActorError;
use crate::learner_version::LearnerVersion;
use crate::metrics::ActorMetrics;
use policy::{ModelConfig, Policy, Weights};
use proto::learner_client::LearnerClient;
use proto::shutdown::Shutdown;
use proto::transport::retry::{FIRST_BACKOFF, MAX_BACKOFF};
use proto::transport::Security;
use proto::weights::{Assembler, HeldWeights, WeightsError};
use proto::weights_chunk::Part;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A complete version: its number and the policy over its weights.
pub type Versioned = Arc<(u64, Policy, u64)>;

/// Builds the policy of a received version, and keeps its tensors (shared with the policy)
/// as the base of the next delta. `Tensor::from_vec` takes each assembled buffer as it is;
/// the policy is the sampling one (transposed copies of its weights, [`Policy::for_sampling`]).
fn build(
    cfg: &ModelConfig,
    tensors: Vec<proto::weights::NamedTensor>,
) -> Result<(Policy, Weights), ActorError> {
    let mut weights = Weights::new();
    for t in tensors {
        let tensor = candle_core::Tensor::from_vec(t.data, t.shape, &candle_core::Device::Cpu)?;
        weights.insert(t.name, tensor);
    }
    Ok((Policy::new(cfg, &weights)?.for_sampling()?, weights))
}

/// The version the actor holds, which a delta from the learner is applied to.
struct HeldVersion {
    version: u64,
    lineage: u64,
    weights: Weights,
}

impl HeldWeights for HeldVersion {
    fn version(&self) -> u64 {
        self.version
    }
    fn lineage(&self) -> u64 {
        self.lineage
    }
    fn tensor(&self, name: &str) -> Option<Vec<f32>> {
        let t = self.weights.get(name)?;
        t.flatten_all().ok()?.to_vec1::<f32>().ok()
    }
}

/// What following the learner's weight stream needs.
pub(crate) struct Subscription {
    /// The learner's address (from the coordinator); followed when it moves.
    pub learner_addr: watch::Receiver<String>,
    pub security: Security,
    pub cfg: ModelConfig,
    /// Told the newest announced version (header seen).
    pub announced: Arc<LearnerVersion>,
    pub metrics: Arc<ActorMetrics>,
    pub stop: Shutdown,
}

/// What ended one connection to the weight stream.
enum Broke {
    /// The stream failed (or the learner closed it): reconnect after a backoff.
    Stream,
    /// The learner moved: connect to the new address at once.
    Moved,
    /// The actor is stopping (or the heartbeats ended, which only happens then).
    Stop,
}

/// Follows the learner's weight stream until `stop`; publishes versions into `slot` and the
/// newest announced version (header seen) into `announced`, and counts what it receives.
/// Follows the learner to a new address (`learner_addr`, from the coordinator) too; a
/// restarted learner behind the version held here sends its own at once, and that one is
/// taken, lower or not.
pub(crate) async fn follow(mut sub: Subscription, slot: watch::Sender<Option<Versioned>>) {
    let mut backoff = FIRST_BACKOFF;
    let mut last_addr = sub.learner_addr.borrow().clone();
    let mut held = None;
    while !sub.stop.is_set() {
        let addr = sub.learner_addr.borrow_and_update().clone();
        if addr != last_addr {
            tracing::info!(from = %last_addr, to = %addr, "the learner moved; following it");
            last_addr = addr.clone();
        }
        let mut received = false;
        match sub
            .connection(&addr, &slot, &mut held, &mut received, backoff)
            .await
        {
            Broke::Moved => continue,
            Broke::Stop => return,
            Broke::Stream => {}
        }
        if received {
            backoff = FIRST_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

impl Subscription {
    /// One connection to the stream at `addr`, until it breaks, the learner moves, or the
    /// actor stops; `received` is set once a complete version came through it.
    async fn connection(
        &mut self,
        addr: &str,
        slot: &watch::Sender<Option<Versioned>>,
        held: &mut Option<HeldVersion>,
        received: &mut bool,
        backoff: Duration,
    ) -> Broke {
        let stream = receive(
            &self.security,
            &self.cfg,
            &self.announced,
            &self.metrics,
            addr,
            (slot, held),
            received,
        );
        tokio::select! {
            r = stream => {
                if let Err(e) = r {
                    tracing::warn!(learner = %addr, error = %e, retry_in = ?backoff, "weight stream broke; reconnecting");
                }
                Broke::Stream
            }
            changed = self.learner_addr.changed() => {
                if changed.is_ok() {
                    return Broke::Moved;
                }
                self.stop.wait().await;
                Broke::Stop
            }
            _ = self.stop.wait() => Broke::Stop,
        }
    }
}

/// Subscribes to the versions after the one in `slot` at `addr` and assembles them (counted
/// in `metrics`, each header announced to `announced`, a delta applied to `base`),
/// publishing each complete one into `slot` and `base`, until the stream ends or fails.
async fn receive(
    security: &Security,
    cfg: &ModelConfig,
    announced: &LearnerVersion,
    metrics: &ActorMetrics,
    addr: &str,
    (slot, base): (&watch::Sender<Option<Versioned>>, &mut Option<HeldVersion>),
    received: &mut bool,
) -> Result<(), String> {
    let (after, held_lineage) = slot.borrow().as_ref().map_or((0, 0), |v| (v.0, v.2));
    let channel = security.channel(addr).await.map_err(|e| e.to_string())?;
    let mut client =
        LearnerClient::new(channel).max_decoding_message_size(proto::MAX_MESSAGE_BYTES);
    let mut stream = client
        .subscribe_weights(proto::SubscribeWeightsRequest {
            after_version: after,
            member_id: String::new(),
            lineage: held_lineage,
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
        // The footer ends the version and clears the assembler: its lineage is read first.
        let lineage = asm.lineage();
        let held_weights = base.as_ref().map(|h| h as &dyn HeldWeights);
        let done = asm.push_onto(chunk, held_weights).map_err(|e| {
            metrics.reject(match e {
                WeightsError::Checksum { .. } => "bad_checksum",
                // Resubscribing names the version held: the learner sends it whole.
                WeightsError::Base(_) => "weights_base",
                _ => "bad_weights",
            });
            e.to_string()
        })?;
        if let Some(v) = asm.receiving() {
            announced.announced(v);
        }
        if let Some((version, tensors)) = done {
            let (policy, weights) = build(cfg, tensors).map_err(|e| {
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
            let held = slot.borrow().as_ref().map_or(0, |v| v.2);
            if held != 0 && held != lineage {
                tracing::info!(
                    version,
                    lineage,
                    dropped_lineage = held,
                    "weights of a new learner lineage: dropping those of the lost one"
                );
            }
            *base = Some(HeldVersion {
                version,
                lineage,
                weights,
            });
            slot.send_replace(Some(Arc::new((version, policy, lineage))));
            *received = true;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "subscriber_tests.rs"]
mod tests;
