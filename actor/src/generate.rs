//! Generating one lease: every prompt G times in one batch, swapping to newer weights
//! between decode steps and never decoding with weights more than `max_lag` versions behind
//! the learner.

use crate::error::ActorError;
use crate::subscriber::Versioned;
use policy::{Decoder, SamplingParams, Tokenizer};
use rollout::RolloutGroup;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tasks::{Problem, Verifier};
use tokio::sync::watch;

/// What the decode loop needs to follow the learner.
pub struct Follow {
    pub slot: watch::Receiver<Option<Versioned>>,
    /// The learner's version as last heard (heartbeats, weight headers).
    pub learner_version: Arc<AtomicU64>,
    pub max_lag: u64,
    pub stop: Arc<AtomicBool>,
    pub handle: tokio::runtime::Handle,
}

/// Generation statistics of one lease.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeaseStats {
    pub swaps: u64,
    pub waited: Duration,
}

/// Samples `group_size` completions for each problem, the group of `problems[i]` under
/// `group_ids[i]` (the coordinator's: a prompt leased again keeps its id, so the learner
/// trains on it once); `None` if stopped midway.
#[allow(clippy::too_many_arguments)]
pub fn generate_lease(
    problems: &[Problem],
    tok: &Tokenizer,
    verifier: &Arc<dyn Verifier>,
    group_size: usize,
    params: SamplingParams,
    group_ids: &[String],
    follow: &mut Follow,
) -> Result<Option<(Vec<RolloutGroup>, LeaseStats)>, ActorError> {
    let mut prompts = Vec::new();
    let mut encoded = Vec::new();
    for p in problems {
        let ids = tok.encode(&p.prompt)?;
        prompts.extend(std::iter::repeat_n(ids.clone(), group_size));
        encoded.push(ids);
    }
    let mut current = follow
        .slot
        .borrow()
        .clone()
        .expect("weights before generating");
    let mut dec = Decoder::new(prompts, params, tok.pad_id(), &candle_core::Device::Cpu)?;
    let mut stats = LeaseStats::default();
    loop {
        // In-flight update: take the newest complete version between decode steps.
        if let Some(newer) = follow.slot.borrow().clone() {
            if newer.0 > current.0 {
                current = newer;
                stats.swaps += 1;
            }
        }
        // Lag gate: wait rather than decode with weights older than learner - k.
        let waited = std::time::Instant::now();
        while rollout::LagBound(follow.max_lag)
            .is_stale(current.0, follow.learner_version.load(Ordering::Relaxed))
        {
            if follow.stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let slot = &mut follow.slot;
            let _ = follow.handle.block_on(async {
                tokio::time::timeout(Duration::from_millis(200), slot.changed()).await
            });
            if let Some(newer) = follow.slot.borrow().clone() {
                if newer.0 > current.0 {
                    current = newer;
                    stats.swaps += 1;
                }
            }
        }
        stats.waited += waited.elapsed();
        if follow.stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        if !dec.step(&current.1, current.0)? {
            break;
        }
    }
    let groups = rollout::group::finish_groups(
        problems,
        encoded,
        dec.finish(),
        group_size,
        tok,
        verifier,
        current.0,
    )?;
    let groups = groups
        .into_iter()
        .zip(group_ids)
        .map(|(mut g, id)| {
            g.group_id = id.clone();
            g
        })
        .collect();
    Ok(Some((groups, stats)))
}
