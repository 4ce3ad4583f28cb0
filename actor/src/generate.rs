//! Generating one lease: G episodes of every prompt in one batch through `rollout`'s episode
//! engine (a one-turn task is the episode of one step), with a step hook ([`Follow`] over the weight slot) that swaps to newer weights
//! between decode steps and never lets a step run with weights more than `max_lag` versions
//! behind the learner.

use crate::error::ActorError;
use crate::subscriber::Versioned;
use policy::{Policy, SamplingParams, StepHook, Tokenizer};
use rollout::{EpisodeOutcome, Episodes, GroupBatch};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tasks::Problem;
use tokio::sync::watch;

/// What the decode loop needs to follow the learner.
pub struct Follow {
    pub slot: watch::Receiver<Option<Versioned>>,
    /// The learner's version as last heard (heartbeats, weight headers).
    pub learner_version: Arc<AtomicU64>,
    pub max_lag: u64,
    pub stop: Arc<AtomicBool>,
    pub handle: tokio::runtime::Handle,
    /// Test hook ([`HOLD_FOR_SWAP_ENV`]): after the lease's first decode step, wait (up to
    /// [`HOLD_DEADLINE`]) until newer weights land, so that its sequences span two versions
    /// however the timing falls. Cleared once it has held.
    pub hold_for_swap: bool,
}

/// Names the actor (`actor-0`, ...) that holds one lease for an in-flight swap: an
/// end-to-end test's way to make a weight swap inside a sequence certain rather than likely.
/// Nothing else sets it.
pub const HOLD_FOR_SWAP_ENV: &str = "OXRL_TEST_HOLD_FOR_SWAP";

/// How long the test hook waits for newer weights before it gives up and goes on.
pub const HOLD_DEADLINE: Duration = Duration::from_secs(120);

/// Generation statistics of one lease.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeaseStats {
    pub swaps: u64,
    pub waited: Duration,
    /// The lineage of the weights the lease's generation started with (its groups carry it).
    pub lineage: u64,
    /// Whether this lease held for a swap (the [`HOLD_FOR_SWAP_ENV`] hook).
    pub held_for_swap: bool,
}

/// What a lease is sampled with: the episodes (environments, caps, chat template), G and
/// the sampling.
pub struct LeaseSampling<'a> {
    pub episodes: &'a Episodes,
    pub group_size: usize,
    pub params: SamplingParams,
}

/// Runs `group_size` episodes of each problem, the group of `problems[i]` under
/// `group_ids[i]` (the coordinator's: a prompt leased again keeps its id, so the learner
/// trains on it once); `None` if stopped midway. Groups an environment failed are in the
/// outcome's `dropped`.
pub fn generate_lease(
    problems: &[Problem],
    tok: &Tokenizer,
    sampling: &LeaseSampling,
    group_ids: &[String],
    follow: &mut Follow,
) -> Result<Option<(EpisodeOutcome, LeaseStats)>, ActorError> {
    let current = follow
        .slot
        .borrow()
        .clone()
        .expect("weights before generating");
    let stats = LeaseStats {
        lineage: current.2,
        ..LeaseStats::default()
    };
    let mut hook = LeaseHook {
        follow,
        current,
        stats,
        steps: 0,
        last_used: 0,
    };
    let batch = GroupBatch {
        problems,
        ids: group_ids,
        group_size: sampling.group_size,
    };
    let outcome =
        rollout::run_episodes(&mut hook, tok, sampling.episodes, batch, &sampling.params)?;
    Ok(outcome.map(|o| (o, hook.stats)))
}

/// The actor's step hook: the newest complete weights before every step, after waiting for
/// weights within `max_lag` of the learner.
struct LeaseHook<'a> {
    follow: &'a mut Follow,
    current: Versioned,
    stats: LeaseStats,
    /// Steps asked for so far.
    steps: u64,
    /// The version the previous step ran with.
    last_used: u64,
}

impl LeaseHook<'_> {
    /// In-flight update: takes the newest complete version the slot holds, or any version
    /// of another lineage (the learner restarted: the weights held may be of a lost future).
    fn take_newer(&mut self) {
        let newer = self.follow.slot.borrow().clone();
        if let Some(newer) = newer {
            if newer.0 > self.current.0 || newer.2 != self.current.2 {
                self.current = newer;
                self.stats.swaps += 1;
            }
        }
    }

    /// The test hook: waits until newer weights than the previous step's have been taken (or
    /// a stop, or [`HOLD_DEADLINE`]).
    fn hold_for_swap(&mut self) {
        self.follow.hold_for_swap = false;
        self.stats.held_for_swap = true;
        let deadline = Instant::now() + HOLD_DEADLINE;
        while self.current.0 == self.last_used && !self.stopped() && Instant::now() < deadline {
            let slot = &mut self.follow.slot;
            let _ = self.follow.handle.block_on(async {
                tokio::time::timeout(Duration::from_millis(200), slot.changed()).await
            });
            self.take_newer();
        }
    }

    fn stopped(&self) -> bool {
        self.follow.stop.load(Ordering::Relaxed)
    }

    /// Lag gate: waits rather than decode with weights older than learner - k; false if
    /// stopped while waiting.
    fn wait_within_lag(&mut self) -> bool {
        let waited = Instant::now();
        while rollout::LagBound(self.follow.max_lag).is_stale(
            self.current.0,
            self.follow.learner_version.load(Ordering::Relaxed),
        ) {
            if self.stopped() {
                return false;
            }
            let slot = &mut self.follow.slot;
            let _ = self.follow.handle.block_on(async {
                tokio::time::timeout(Duration::from_millis(200), slot.changed()).await
            });
            self.take_newer();
        }
        self.stats.waited += waited.elapsed();
        true
    }
}

impl StepHook for LeaseHook<'_> {
    fn weights(&mut self) -> Option<(&Policy, u64)> {
        self.take_newer();
        if self.follow.hold_for_swap && self.steps == 1 {
            self.hold_for_swap();
        }
        self.steps += 1;
        if !self.wait_within_lag() || self.stopped() {
            return None;
        }
        self.last_used = self.current.0;
        Some((&self.current.1, self.current.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy::tokenizer::char_tokenizer;
    use policy::ModelConfig;

    fn weights(version: u64) -> Versioned {
        let cfg = ModelConfig::tiny(char_tokenizer().vocab_size(), 16, 1, 2, 1);
        let w = policy::random_weights(&cfg, version, &candle_core::Device::Cpu).unwrap();
        Arc::new((version, Policy::new(&cfg, &w).unwrap(), 1))
    }

    fn follow(
        rt: &tokio::runtime::Runtime,
        learner: u64,
    ) -> (watch::Sender<Option<Versioned>>, Follow) {
        let (tx, slot) = watch::channel(Some(weights(1)));
        let follow = Follow {
            slot,
            learner_version: Arc::new(AtomicU64::new(learner)),
            max_lag: 1,
            stop: Arc::new(AtomicBool::new(false)),
            handle: rt.handle().clone(),
            hold_for_swap: false,
        };
        (tx, follow)
    }

    #[test]
    fn the_hook_swaps_in_flight_waits_out_the_lag_and_stops() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (tx, mut follow) = follow(&rt, 1);
        let current = weights(1);
        let mut hook = LeaseHook {
            follow: &mut follow,
            current,
            stats: LeaseStats::default(),
            steps: 0,
            last_used: 0,
        };
        assert_eq!(hook.weights().map(|w| w.1), Some(1));
        tx.send_replace(Some(weights(2)));
        assert_eq!(hook.weights().map(|w| w.1), Some(2));
        assert_eq!(hook.stats.swaps, 1);
        // The learner is at 10: version 2 is too old, so the hook waits for version 9,
        // within max_lag = 1, which arrives from another thread.
        hook.follow.learner_version.store(10, Ordering::Relaxed);
        let publisher = std::thread::spawn(move || {
            tx.send_replace(Some(weights(9)));
            tx
        });
        assert_eq!(hook.weights().map(|w| w.1), Some(9));
        assert_eq!(hook.stats.swaps, 2);
        let _tx = publisher.join().unwrap();
        // Too far behind again, and stopping: no more steps.
        hook.follow.learner_version.store(20, Ordering::Relaxed);
        hook.follow.stop.store(true, Ordering::Relaxed);
        assert!(hook.weights().is_none());
    }

    #[test]
    fn the_test_hook_holds_the_second_step_until_newer_weights_land_once() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (tx, mut follow) = follow(&rt, 1);
        follow.hold_for_swap = true;
        let mut hook = LeaseHook {
            follow: &mut follow,
            current: weights(1),
            stats: LeaseStats::default(),
            steps: 0,
            last_used: 0,
        };
        // The first step (prefill) goes on with the weights held.
        assert_eq!(hook.weights().map(|w| w.1), Some(1));
        // Whether it lands before the second step asks or while it waits.
        let publisher = std::thread::spawn(move || {
            tx.send_replace(Some(weights(2)));
            tx
        });
        // The second waits for version 2 from the other thread.
        assert_eq!(hook.weights().map(|w| w.1), Some(2));
        assert!(hook.stats.held_for_swap);
        assert!(!hook.follow.hold_for_swap, "the hook holds once");
        let tx = publisher.join().unwrap();
        // Once held, later steps never wait for newer weights.
        assert_eq!(hook.weights().map(|w| w.1), Some(2));
        drop(tx);
        assert_eq!(hook.stats.swaps, 1);
    }

    #[test]
    fn a_lease_keeps_the_coordinators_group_ids_and_records_versions() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (_tx, mut follow) = follow(&rt, 1);
        let source = tasks::from_spec("addition:2", 0, &tasks::VerifierRegistry::new()).unwrap();
        let problems: Vec<Problem> = (0..2)
            .map(|i| source.problem(tasks::Split::Train, i))
            .collect();
        let ids = vec!["lease-7/a".to_string(), "lease-7/b".to_string()];
        let params = SamplingParams {
            max_new_tokens: 3,
            ..Default::default()
        };
        let tok = char_tokenizer();
        let episodes = Episodes {
            limits: rollout::EpisodeLimits {
                max_turns: 1,
                max_tokens: 16,
            },
            ..Episodes::single(source.verifier())
        };
        let sampling = LeaseSampling {
            episodes: &episodes,
            group_size: 2,
            params,
        };
        let (outcome, stats) = generate_lease(&problems, &tok, &sampling, &ids, &mut follow)
            .unwrap()
            .expect("not stopped");
        let groups = outcome.groups;
        assert_eq!(stats.swaps, 0);
        let got: Vec<&str> = groups.iter().map(|g| g.group_id.as_str()).collect();
        assert_eq!(got, ["lease-7/a", "lease-7/b"]);
        for (g, p) in groups.iter().zip(&problems) {
            assert_eq!(g.problem_id, p.id);
            assert_eq!(g.samples.len(), 2);
            assert!(g.samples.iter().all(|s| s.versions.iter().all(|&v| v == 1)));
        }
    }
}
