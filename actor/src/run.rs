//! The actor's life: register, follow the weights, then lease -> generate -> push ->
//! complete until the coordinator says the run is over (or `shutdown`): the learner is done,
//! or the prompt pool is exhausted (every prompt retired or the epochs done), told by a
//! heartbeat's `stop` or a lease refused as `exhausted` or `stopping`.

use crate::deliver::{deliver, LearnerLink};
use crate::error::ActorError;
use crate::generate::{generate_lease, Follow, LeaseSampling};
use crate::heartbeat::Heartbeats;
use crate::learner_version::LearnerVersion;
use crate::metrics::ActorMetrics;
use crate::subscriber::{follow, Subscription, Versioned};
use policy::Tokenizer;
use proto::coordinator_client::CoordinatorClient;
use proto::shutdown::Shutdown;
use proto::transport::{ClientChannel, Retry, RetryLimits, Security};
use proto::LeaseRefusal;
use rollout::config::RunConfig;
use rollout::RolloutGroup;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tasks::Problem;
use tokio::sync::watch;
use tracing::Instrument;

/// What an actor did.
#[derive(Debug, Default, Clone)]
pub struct ActorSummary {
    pub leases: u64,
    pub groups_accepted: u64,
    pub groups_rejected: u64,
    /// Groups not delivered because an environment or the reward server failed (after its
    /// retries).
    pub groups_dropped: u64,
    /// Weight swaps made between decode steps of a lease (in-flight updates).
    pub in_flight_swaps: u64,
    /// Seconds spent waiting for newer weights (lag gate) or for work.
    pub idle_s: f64,
    /// Seconds spent generating.
    pub busy_s: f64,
}

/// How long the actor waits for the coordinator to accept connections at start.
const CONNECT_DEADLINE: Duration = Duration::from_secs(60);

/// Registers as an actor, retrying while the coordinator is unreachable.
async fn register(
    coord: &CoordinatorClient<ClientChannel>,
    name: &str,
    retry: &mut Retry,
) -> Result<proto::RegisterReply, ActorError> {
    let request = proto::RegisterRequest {
        role: proto::Role::Actor as i32,
        advertise_addr: String::new(),
        name: name.into(),
    };
    Ok(proto::transport::register(coord, request, retry).await?)
}

/// Serves `metrics` on `listener`, behind `security`'s token and TLS, until the returned
/// server is dropped.
fn serve_metrics(
    metrics: &Arc<ActorMetrics>,
    listener: tokio::net::TcpListener,
    security: &Security,
) -> Result<proto::metrics_http::Running, ActorError> {
    let scraped = metrics.clone();
    let router = proto::metrics_http::metrics_router(move || scraped.render());
    Ok(proto::metrics_http::spawn(listener, router, security)?)
}

/// Retries of the actor's calls: to the coordinator (named by its URL) and to the learner.
/// Calls ride out their peers' restarts (retried with backoff), and give up on a peer that
/// stays down or stops answering.
#[derive(Clone)]
struct Calls {
    coordinator_url: String,
    request_timeout: Duration,
}

impl Calls {
    fn to_coordinator(&self, what: &str) -> Retry {
        Retry::new(
            format!("{what} the coordinator at {}", self.coordinator_url),
            RetryLimits::default(),
            self.request_timeout,
        )
    }

    fn to_learner(&self) -> Retry {
        Retry::new(
            "pushing groups to the learner",
            RetryLimits::default(),
            self.request_timeout,
        )
    }
}

/// Runs one actor against the coordinator at `coordinator_url`.
/// `security` (token, TLS, timeouts) applies to its connections to the coordinator and the
/// learner. With `metrics_listener`, Prometheus `GET /metrics` is served on it from the
/// start (before the actor has weights) until it returns.
pub async fn run_actor(
    coordinator_url: &str,
    name: &str,
    security: Security,
    metrics_listener: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<ActorSummary, ActorError> {
    let metrics = Arc::new(ActorMetrics::new());
    // Dropped when this function returns, which stops the metrics server.
    let _metrics_server = metrics_listener
        .map(|l| serve_metrics(&metrics, l, &security))
        .transpose()?;
    let coord =
        proto::transport::connect_coordinator(&security, coordinator_url, CONNECT_DEADLINE).await?;
    let calls = Calls {
        coordinator_url: coordinator_url.to_string(),
        request_timeout: security.timeouts().request,
    };
    let reg = register(&coord, name, &mut calls.to_coordinator("registering with")).await?;
    let cfg = RunConfig::from_wire(&reg.run_config)?;
    // Shared with the heartbeats: a new id when the actor registers again.
    let (member_tx, member_rx) = watch::channel(reg.member_id.clone());
    let model = policy::default_model::load_model(&cfg.model)?;
    let source = cfg.problem_source(&tasks::VerifierRegistry::new())?;
    let stop = Shutdown::on(shutdown);
    let versions = LearnerVersion::new(reg.learner_version);
    metrics.watch_learner_version(versions.current());
    let held = Arc::new(AtomicU64::new(0));

    // Heartbeats: liveness, the learner's version and address, and the run's end.
    let (addr_tx, addr_rx) = watch::channel(reg.learner_addr.clone());
    tokio::spawn(
        Heartbeats {
            coord: coord.clone(),
            url: coordinator_url.to_string(),
            member: member_rx.clone(),
            held: held.clone(),
            versions: versions.clone(),
            learner_addr: addr_tx,
            stop: stop.clone(),
            metrics: metrics.clone(),
            every: cfg
                .pipeline
                .heartbeat_interval()
                .max(Duration::from_millis(50)),
        }
        .run(),
    );
    let subscription = Subscription {
        learner_addr: addr_rx.clone(),
        security: security.clone(),
        cfg: model.config.clone(),
        announced: versions.clone(),
        metrics: metrics.clone(),
        stop: stop.clone(),
    };
    let Some(slot_rx) = follow_weights(subscription).await? else {
        return Ok(ActorSummary::default());
    };
    let mut actor = LeaseLoop {
        coord,
        name: name.to_string(),
        member_tx,
        member_rx,
        leasing: calls.to_coordinator("leasing from"),
        completing: calls.to_coordinator("completing a lease with"),
        pushing: calls.to_learner(),
        calls,
        learner: LearnerLink::new(security.clone(), addr_rx),
        slot_rx,
        held,
        versions,
        max_lag: cfg.update.max_lag,
        tok: model.tokenizer.clone(),
        eos: model.eos_ids(),
        episodes: rollout::Episodes {
            envs: crate::envs::environments(
                &cfg.episode,
                source.verifier(),
                &security,
                tokio::runtime::Handle::current(),
            )?,
            limits: (&cfg.episode).into(),
            chat: rollout::ChatFormat::for_episodes(&cfg.episode, &model.tokenizer)?,
        },
        rewards: crate::rewards::RmRewards::for_run(&cfg.reward, &security)?,
        cfg,
        metrics,
        stop: stop.clone(),
        summary: ActorSummary::default(),
        hold_for_swap: hold_for_swap_requested(name),
    };
    actor.run().await?;
    stop.trigger();
    tracing::info!(summary = ?actor.summary, "actor done");
    Ok(actor.summary)
}

/// Waits for the learner's address (it comes with registration or a later heartbeat), then
/// follows its weight stream until the first version arrives: the slot versions arrive in,
/// or `None` when stopped first.
async fn follow_weights(
    subscription: Subscription,
) -> Result<Option<watch::Receiver<Option<Versioned>>>, ActorError> {
    let stop = subscription.stop.clone();
    let mut addr_rx = subscription.learner_addr.clone();
    let learner_addr = tokio::select! {
        r = addr_rx.wait_for(|a| !a.is_empty()) => r.map(|a| a.clone()).map_err(|_| ActorError::Ended("heartbeats"))?,
        _ = stop.wait() => return Ok(None),
    };
    tracing::info!(learner = %learner_addr, "following the learner's weights");
    let (slot_tx, mut slot_rx) = watch::channel::<Option<Versioned>>(None);
    tokio::spawn(follow(subscription, slot_tx));
    tokio::select! {
        r = slot_rx.wait_for(|s| s.is_some()) => { r.map_err(|_| ActorError::Ended("the weight stream"))?; }
        _ = stop.wait() => return Ok(None),
    }
    Ok(Some(slot_rx))
}

/// What one lease request came to.
enum Leased {
    Granted(proto::LeaseReply),
    /// Nothing this time (refused for now, re-registered, a failed call): ask again.
    Again,
    /// The run is over, or the actor is stopping.
    Stop,
}

/// Whether the test hook [`crate::generate::HOLD_FOR_SWAP_ENV`] names this actor.
fn hold_for_swap_requested(name: &str) -> bool {
    let on = std::env::var(crate::generate::HOLD_FOR_SWAP_ENV).is_ok_and(|v| v == name);
    if on {
        tracing::warn!(
            actor = name,
            "test hook: one lease holds after its first step until newer weights land"
        );
    }
    on
}

/// The actor's loop once it has weights: lease -> generate -> push -> complete.
struct LeaseLoop {
    coord: CoordinatorClient<ClientChannel>,
    name: String,
    member_tx: watch::Sender<String>,
    member_rx: watch::Receiver<String>,
    calls: Calls,
    leasing: Retry,
    completing: Retry,
    pushing: Retry,
    learner: LearnerLink,
    slot_rx: watch::Receiver<Option<Versioned>>,
    /// The version held, reported with heartbeats.
    held: Arc<AtomicU64>,
    versions: Arc<LearnerVersion>,
    max_lag: u64,
    tok: Tokenizer,
    eos: Vec<u32>,
    episodes: rollout::Episodes,
    /// The run's reward server (`reward.rm`), when rewards come from one.
    rewards: Option<crate::rewards::RmRewards>,
    cfg: RunConfig,
    metrics: Arc<ActorMetrics>,
    stop: Shutdown,
    summary: ActorSummary,
    /// The test hook [`crate::generate::HOLD_FOR_SWAP_ENV`], until one lease has held.
    hold_for_swap: bool,
}

impl LeaseLoop {
    /// Leases and works until the run is over or the actor stops.
    async fn run(&mut self) -> Result<(), ActorError> {
        while !self.stop.is_set() {
            let lease = match self.lease().await? {
                Leased::Granted(lease) => lease,
                Leased::Again => continue,
                Leased::Stop => break,
            };
            let span = tracing::info_span!("lease", lease_id = %lease.lease_id, prompts = lease.prompts.len());
            if !self.work(lease).instrument(span).await? {
                break;
            }
        }
        Ok(())
    }

    /// Asks the coordinator for a lease with the version held.
    async fn lease(&mut self) -> Result<Leased, ActorError> {
        let version = self.slot_rx.borrow().as_ref().map(|v| v.0).unwrap_or(0);
        self.held.store(version, Ordering::Relaxed);
        let idle = std::time::Instant::now();
        let lease = self
            .coord
            .lease(proto::LeaseRequest {
                member_id: self.member_rx.borrow().clone(),
                version,
                max_prompts: self.cfg.pipeline.prompts_per_lease as u32,
            })
            .await;
        let lease = match lease {
            Ok(l) => {
                self.leasing.succeeded();
                l.into_inner()
            }
            Err(s) if s.code() == tonic::Code::NotFound => {
                // Declared dead (e.g. after a long stall), or a coordinator restarted without
                // its journal: join again under a new id.
                let mut retry = self.calls.to_coordinator("registering again with");
                let r = register(&self.coord, &self.name, &mut retry).await?;
                tracing::info!(member = %r.member_id, "registered again");
                self.member_tx.send_replace(r.member_id);
                return Ok(Leased::Again);
            }
            Err(s) => {
                let wait = self.leasing.failed(&s)?;
                if self.stop.sleep(wait).await {
                    return Ok(Leased::Stop);
                }
                return Ok(Leased::Again);
            }
        };
        self.versions.heard_from_coordinator(lease.learner_version);
        match LeaseRefusal::try_from(lease.refused) {
            Ok(LeaseRefusal::Unspecified) => {}
            Ok(refusal @ (LeaseRefusal::Stopping | LeaseRefusal::Exhausted)) => {
                // Said once, by whichever noticed first (the heartbeats may have).
                let first = self.stop.trigger();
                if first && refusal == LeaseRefusal::Exhausted {
                    tracing::info!(
                        "the coordinator's prompt pool is exhausted (every prompt retired or \
                         the epochs done): nothing left to generate; stopping"
                    );
                } else if first {
                    tracing::info!("the coordinator says the learner is done: stopping");
                }
                return Ok(Leased::Stop);
            }
            Ok(LeaseRefusal::StaleWeights) => {
                tokio::select! {
                    _ = tokio::time::timeout(Duration::from_secs(1), self.slot_rx.changed()) => {}
                    _ = self.stop.wait() => {}
                }
                self.idle(idle.elapsed());
                return Ok(Leased::Again);
            }
            // Empty for now, or a refusal this actor does not know: ask again.
            Ok(LeaseRefusal::PoolEmpty) | Err(_) => {
                tracing::debug!(refused = lease.refused, "no lease");
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.idle(idle.elapsed());
                return Ok(Leased::Again);
            }
        }
        self.idle(idle.elapsed());
        self.summary.leases += 1;
        self.metrics.leases.inc();
        Ok(Leased::Granted(lease))
    }

    fn idle(&mut self, took: Duration) {
        self.summary.idle_s += took.as_secs_f64();
        self.metrics.idle(took);
    }

    /// Generates, delivers and completes one lease; false when the actor stopped midway.
    async fn work(&mut self, lease: proto::LeaseReply) -> Result<bool, ActorError> {
        let Some((groups, lineage)) = self.generate(&lease).await? else {
            return Ok(false);
        };
        let groups = self.rewarded(groups).await;
        match self.push(&lease.lease_id, &groups, lineage).await? {
            Pushed::Stopped => Ok(false),
            // Not completed: the lease expires and its prompts are leased again.
            Pushed::StaleLineage => Ok(true),
            Pushed::Acknowledged => self.complete(&lease, &groups).await,
        }
    }

    /// The groups with their rewards from the run's reward server, if it has one; a group
    /// the server gave no usable scores is dropped, counted and logged.
    async fn rewarded(&mut self, groups: Vec<RolloutGroup>) -> Vec<RolloutGroup> {
        let Some(rewards) = &self.rewards else {
            return groups;
        };
        let (kept, dropped) = rewards.score(groups).await;
        for d in &dropped {
            self.summary.groups_dropped += 1;
            self.metrics.reject("reward_model");
            tracing::warn!(group = %d.group_id, problem = %d.problem_id, reason = "reward_model", error = %d.error, "dropped a group: the reward model failed");
        }
        kept
    }

    /// Samples the lease's groups on a blocking thread; `None` if stopped midway.
    async fn generate(
        &mut self,
        lease: &proto::LeaseReply,
    ) -> Result<Option<(Vec<RolloutGroup>, u64)>, ActorError> {
        let problems: Vec<Problem> = lease
            .prompts
            .iter()
            .map(|p| Problem {
                id: p.problem_id.clone(),
                prompt: p.prompt.clone(),
                answer: p.answer.clone(),
                solution: String::new(),
            })
            .collect();
        let cfg = &self.cfg;
        let mut params = cfg.sampling.clone();
        params.seed = cfg.seed ^ lease_seed(&lease.lease_id);
        if params.stop_tokens.is_empty() {
            params.stop_tokens = self.eos.clone();
        }
        let mut follow_state = Follow {
            slot: self.slot_rx.clone(),
            learner_version: self.versions.current().clone(),
            max_lag: self.max_lag,
            stop: self.stop.flag(),
            handle: tokio::runtime::Handle::current(),
            hold_for_swap: self.hold_for_swap,
        };
        // The coordinator's group ids (older coordinators sent none: lease/problem then).
        let group_ids: Vec<String> = lease
            .prompts
            .iter()
            .map(|p| {
                if p.group_id.is_empty() {
                    format!("{}/{}", lease.lease_id, p.problem_id)
                } else {
                    p.group_id.clone()
                }
            })
            .collect();
        tracing::info!(
            ?group_ids,
            version = self.held.load(Ordering::Relaxed),
            "generating"
        );
        let (tok2, episodes) = (self.tok.clone(), self.episodes.clone());
        let group_size = cfg.group_size;
        let busy = std::time::Instant::now();
        let generated = tokio::task::spawn_blocking(move || {
            let sampling = LeaseSampling {
                episodes: &episodes,
                group_size,
                params,
            };
            generate_lease(&problems, &tok2, &sampling, &group_ids, &mut follow_state)
        })
        .await
        .map_err(|e| ActorError::Thread(e.to_string()))??;
        let elapsed = busy.elapsed();
        self.summary.busy_s += elapsed.as_secs_f64();
        let Some((outcome, stats)) = generated else {
            return Ok(None);
        };
        self.hold_for_swap &= !stats.held_for_swap;
        for d in &outcome.dropped {
            self.summary.groups_dropped += 1;
            self.metrics.env_dropped(d.error.reason());
            tracing::warn!(group = %d.group_id, problem = %d.problem_id, reason = d.error.reason(), error = %d.error, "dropped a group: its environment failed");
        }
        self.metrics.episodes(&outcome.groups, &outcome.stats);
        let groups = outcome.groups;
        self.summary.in_flight_swaps += stats.swaps;
        self.summary.idle_s += stats.waited.as_secs_f64();
        self.summary.busy_s -= stats.waited.as_secs_f64();
        let tokens = groups.iter().map(|g| g.num_tokens() as u64).sum();
        self.metrics.idle(stats.waited);
        self.metrics
            .generated(elapsed.saturating_sub(stats.waited), tokens, stats.swaps);
        Ok(Some((groups, stats.lineage)))
    }

    /// Pushes the groups, sampled from weights of `lineage`, until the learner acknowledges
    /// each.
    async fn push(
        &mut self,
        lease_id: &str,
        groups: &[RolloutGroup],
        lineage: u64,
    ) -> Result<Pushed, ActorError> {
        let wire: Vec<proto::RolloutGroup> = groups
            .iter()
            .map(|g| proto::RolloutGroup {
                lineage,
                ..rollout::wire::to_wire(g, lease_id)
            })
            .collect();
        self.metrics.groups_pushed.inc_by(wire.len() as u64);
        let mut stop_wait = self.stop.receiver();
        let Some(acks) =
            deliver(&mut self.learner, &wire, &mut self.pushing, &mut stop_wait).await?
        else {
            tracing::info!(learner = %self.learner.addr(), "stopping with groups undelivered");
            return Ok(Pushed::Stopped);
        };
        let mut pushed = Pushed::Acknowledged;
        for ack in acks {
            if ack.outcome == proto::push_ack::Outcome::StaleLineage as i32 {
                self.summary.groups_rejected += 1;
                self.metrics.groups_rejected.inc();
                tracing::warn!(group = %ack.group_id, lineage, "the learner refused a group sampled with weights of a lost lineage; leaving the lease to expire so its prompts are leased again");
                pushed = Pushed::StaleLineage;
            } else if ack.outcome == proto::push_ack::Outcome::Rejected as i32 {
                self.summary.groups_rejected += 1;
                self.metrics.groups_rejected.inc();
                tracing::warn!(group = %ack.group_id, reason = %ack.reason, "learner rejected a group");
            } else {
                self.summary.groups_accepted += 1;
                if ack.outcome == proto::push_ack::Outcome::Duplicate as i32 {
                    self.metrics.groups_duplicate.inc();
                } else {
                    self.metrics.groups_accepted.inc();
                }
                tracing::debug!(group_id = %ack.group_id, learner_version = ack.learner_version, "group delivered");
            }
        }
        Ok(pushed)
    }

    /// Reports the lease's rewards to the coordinator; false when stopped first.
    async fn complete(
        &mut self,
        lease: &proto::LeaseReply,
        groups: &[RolloutGroup],
    ) -> Result<bool, ActorError> {
        let results = groups
            .iter()
            .map(|g| proto::ProblemResult {
                problem_id: g.problem_id.clone(),
                rewards: g.samples.iter().map(|s| s.reward).collect(),
            })
            .collect();
        let completion = proto::CompleteRequest {
            member_id: self.member_rx.borrow().clone(),
            lease_id: lease.lease_id.clone(),
            results,
        };
        // A lease that expired meanwhile is answered as such: its prompts are already
        // leased again under the same group ids, which the learner now has.
        let coord = &self.coord;
        let completed = self.completing.run(|| {
            let (mut c, r) = (coord.clone(), completion.clone());
            async move { c.complete(r).await }
        });
        tokio::select! {
            done = completed => { done?; }
            _ = self.stop.wait() => return Ok(false),
        }
        Ok(true)
    }
}

/// How pushing a lease's groups ended.
enum Pushed {
    /// Every group acknowledged: the lease may be completed.
    Acknowledged,
    /// Some group was sampled with weights of a lost lineage: the lease is left to expire.
    StaleLineage,
    /// The actor stopped first.
    Stopped,
}

fn lease_seed(lease_id: &str) -> u64 {
    lease_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x1000_0000_01b3)
    })
}
