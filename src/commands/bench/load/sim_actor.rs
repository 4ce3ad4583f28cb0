//! One simulated actor of `oxrl bench load`: the real actor's protocol (register, heartbeat,
//! lease, push the lease's groups over PushRollouts, complete) with synthetic groups in place
//! of a model: random tokens inside the vocabulary, finite log-probs, rewards with variance.

use super::tally::Tally;
use proto::coordinator_client::CoordinatorClient;
use proto::learner_client::LearnerClient;
use proto::transport::{ClientChannel, Security};
use proto::LeaseRefusal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What the synthetic groups look like.
#[derive(Debug, Clone)]
pub(super) struct Shape {
    pub group_size: usize,
    /// Completion tokens per sample, at most (each sample draws 1..=this).
    pub max_tokens: usize,
    pub prompts_per_lease: u32,
    pub vocab_size: u32,
    /// Every Nth lease pushes its first group twice (0 = never): the learner must answer
    /// the copy `Duplicate`.
    pub resend_every: u64,
    /// Push the groups to the learner (false: lease and complete only).
    pub push: bool,
}

/// A registered simulated actor with its own connections, like a real actor process.
pub(super) struct SimActor {
    name: String,
    member_id: String,
    coordinator: CoordinatorClient<ClientChannel>,
    learner: LearnerClient<ClientChannel>,
    /// The newest learner version heard of; leases ask with it and tokens carry it.
    version: Arc<AtomicU64>,
    shape: Arc<Shape>,
    tally: Arc<Tally>,
    rng: SplitMix,
    leases: u64,
    stop_heartbeats: watch::Sender<bool>,
}

/// What one lease attempt came to.
pub(super) enum Cycle {
    /// A lease was granted and delivered (whatever the acknowledgements said).
    Delivered,
    /// No lease (refused or failed); try again.
    Retry,
    /// The coordinator says the run is over.
    Stopping,
}

impl SimActor {
    /// Connects, registers and starts heartbeating; waits for the learner's address.
    pub async fn join(
        name: String,
        security: &Security,
        coordinator_url: &str,
        shape: Arc<Shape>,
        tally: Arc<Tally>,
        seed: u64,
    ) -> anyhow::Result<SimActor> {
        let mut coordinator = CoordinatorClient::new(security.channel(coordinator_url).await?)
            .max_decoding_message_size(proto::MAX_MESSAGE_BYTES);
        let reg = coordinator
            .register(proto::RegisterRequest {
                role: proto::Role::Actor as i32,
                advertise_addr: String::new(),
                name: name.clone(),
            })
            .await?
            .into_inner();
        let run = rollout::config::RunConfig::from_wire(&reg.run_config)?;
        let version = Arc::new(AtomicU64::new(reg.learner_version));
        let mut learner_addr = reg.learner_addr;
        // The learner registers a moment after it listens.
        let until = Instant::now() + Duration::from_secs(60);
        while learner_addr.is_empty() {
            anyhow::ensure!(Instant::now() < until, "no learner registered within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
            let beat = coordinator
                .heartbeat(proto::HeartbeatRequest {
                    member_id: reg.member_id.clone(),
                    version: 0,
                    env: None,
                })
                .await?
                .into_inner();
            version.fetch_max(beat.learner_version, Ordering::Relaxed);
            learner_addr = beat.learner_addr;
        }
        let learner = LearnerClient::new(security.channel(&learner_addr).await?)
            .max_encoding_message_size(proto::MAX_MESSAGE_BYTES);
        let (stop_heartbeats, stopped) = watch::channel(false);
        tokio::spawn(heartbeats(
            coordinator.clone(),
            reg.member_id.clone(),
            run.pipeline
                .heartbeat_interval()
                .max(Duration::from_millis(50)),
            version.clone(),
            tally.clone(),
            stopped,
        ));
        Ok(SimActor {
            name,
            member_id: reg.member_id,
            coordinator,
            learner,
            version,
            shape,
            tally,
            rng: SplitMix(seed),
            leases: 0,
            stop_heartbeats,
        })
    }

    /// Lease -> push -> complete until `stop` is set, finishing the lease in hand.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            match self.cycle(self.shape.prompts_per_lease).await {
                Cycle::Delivered => {}
                Cycle::Stopping => break,
                Cycle::Retry => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                }
            }
        }
        self.leave();
    }

    /// Stops heartbeating.
    pub fn leave(self) {
        let _ = self.stop_heartbeats.send(true);
    }

    /// One lease of up to `max_prompts` prompts, delivered in full.
    pub async fn cycle(&mut self, max_prompts: u32) -> Cycle {
        let asked = Instant::now();
        let reply = self
            .coordinator
            .lease(proto::LeaseRequest {
                member_id: self.member_id.clone(),
                version: self.version.load(Ordering::Relaxed),
                max_prompts,
            })
            .await;
        let reply = match reply {
            Ok(r) => r.into_inner(),
            Err(status) => {
                self.tally.lease_answered(asked.elapsed(), false);
                self.tally.rpc_error("lease", &status);
                return Cycle::Retry;
            }
        };
        self.tally.lease_answered(
            asked.elapsed(),
            reply.refused() == LeaseRefusal::Unspecified,
        );
        self.version
            .fetch_max(reply.learner_version, Ordering::Relaxed);
        match reply.refused() {
            LeaseRefusal::Unspecified => {}
            LeaseRefusal::Stopping | LeaseRefusal::Exhausted => return Cycle::Stopping,
            // Stale weights: the reply carried the newer version; pool empty: wait a little.
            LeaseRefusal::StaleWeights | LeaseRefusal::PoolEmpty => return Cycle::Retry,
        }
        self.leases += 1;
        let groups: Vec<proto::RolloutGroup> = reply
            .prompts
            .iter()
            .map(|p| self.group(&reply.lease_id, &p.problem_id, reply.learner_version))
            .collect();
        if self.shape.push {
            self.push(&groups).await;
        }
        self.complete(&reply.lease_id, &groups).await;
        Cycle::Delivered
    }

    /// A synthetic group for `problem_id`, sampled "with" `version`.
    fn group(&mut self, lease_id: &str, problem_id: &str, version: u64) -> proto::RolloutGroup {
        let vocab = self.shape.vocab_size;
        let prompt_len = 3 + self.rng.below(6) as usize;
        let prompt_tokens = (0..prompt_len).map(|_| self.rng.below(vocab)).collect();
        let samples = (0..self.shape.group_size)
            .map(|i| {
                let n = 1 + self.rng.below(self.shape.max_tokens as u32) as usize;
                // Samples 0 and 1 disagree, so no group is dropped for zero variance.
                let reward = match i {
                    0 => 1.0,
                    1 => 0.0,
                    _ => self.rng.below(2) as f32,
                };
                proto::Sample {
                    tokens: (0..n).map(|_| self.rng.below(vocab)).collect(),
                    logprobs: (0..n).map(|_| -0.01 - 5.0 * self.rng.unit()).collect(),
                    versions: vec![version; n],
                    reward,
                    truncated: n == self.shape.max_tokens,
                    mask: Vec::new(),
                    turns: 1,
                    text: String::new(),
                }
            })
            .collect();
        proto::RolloutGroup {
            group_id: format!("{lease_id}/{problem_id}"),
            lease_id: lease_id.to_string(),
            problem_id: problem_id.to_string(),
            prompt_tokens,
            samples,
            lineage: 0,
        }
    }

    /// Pushes the groups (and, every `resend_every` leases, the first one again) and reads
    /// one acknowledgement per message.
    async fn push(&mut self, groups: &[proto::RolloutGroup]) {
        let mut wire = groups.to_vec();
        let every = self.shape.resend_every;
        if every > 0 && self.leases.is_multiple_of(every) && !groups.is_empty() {
            wire.push(groups[0].clone());
        }
        let sent = wire.len() as u64;
        let originals = groups.len() as u64;
        let mut acks = match self.learner.push_rollouts(tokio_stream::iter(wire)).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                self.tally.rpc_error("push_rollouts", &status);
                return;
            }
        };
        let mut got = 0u64;
        loop {
            match acks.message().await {
                Ok(Some(ack)) => {
                    got += 1;
                    self.tally.ack(&ack, got > originals);
                }
                Ok(None) => break,
                Err(status) => {
                    self.tally.rpc_error("reading acknowledgements", &status);
                    break;
                }
            }
        }
        if got < sent {
            self.tally.missing_acks(sent - got);
        }
    }

    async fn complete(&mut self, lease_id: &str, groups: &[proto::RolloutGroup]) {
        let results = groups
            .iter()
            .map(|g| proto::ProblemResult {
                problem_id: g.problem_id.clone(),
                rewards: g.samples.iter().map(|s| s.reward).collect(),
            })
            .collect();
        let reply = self
            .coordinator
            .complete(proto::CompleteRequest {
                member_id: self.member_id.clone(),
                lease_id: lease_id.to_string(),
                results,
            })
            .await;
        match reply {
            Ok(r) if r.get_ref().accepted => self
                .tally
                .completed(groups.iter().map(|g| g.group_id.clone())),
            Ok(_) => self.tally.completion_refused(lease_id),
            Err(status) => self.tally.rpc_error("complete", &status),
        }
    }
}

impl std::fmt::Debug for SimActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimActor")
            .field("name", &self.name)
            .field("member_id", &self.member_id)
            .finish_non_exhaustive()
    }
}

/// Heartbeats until `stopped`; keeps `version` at the newest learner version heard of.
async fn heartbeats(
    mut coordinator: CoordinatorClient<ClientChannel>,
    member_id: String,
    every: Duration,
    version: Arc<AtomicU64>,
    tally: Arc<Tally>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let beat = coordinator
            .heartbeat(proto::HeartbeatRequest {
                member_id: member_id.clone(),
                version: version.load(Ordering::Relaxed),
                env: None,
            })
            .await;
        match beat {
            Ok(r) => {
                let r = r.into_inner();
                tally.heartbeat();
                version.fetch_max(r.learner_version, Ordering::Relaxed);
                if r.unknown_member {
                    tally.other_error(format!("{member_id} was declared dead"));
                }
            }
            Err(status) => tally.rpc_error("heartbeat", &status),
        }
    }
}

/// SplitMix64: a small, seeded generator; synthetic tokens need no more.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u32) -> u32 {
        (((self.next() >> 32) * u64::from(n)) >> 32) as u32
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_in_range() {
        let mut rng = SplitMix(7);
        for _ in 0..10_000 {
            assert!(rng.below(100) < 100);
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert_eq!(rng.below(1), 0);
    }
}
