//! The actor's life: register, follow the weights, then lease -> generate -> push ->
//! complete until the coordinator says the run is over (or `shutdown`): the learner is done,
//! or the prompt pool is exhausted (every prompt retired or the epochs done), told by a
//! heartbeat's `stop` or a lease refused as `exhausted` or `stopping`.

use crate::deliver::{deliver, LearnerLink};
use crate::error::ActorError;
use crate::generate::{generate_lease, Follow};
use crate::learner_version::LearnerVersion;
use crate::metrics::ActorMetrics;
use crate::subscriber::{follow, Versioned};
use proto::coordinator_client::CoordinatorClient;
use proto::transport::{ClientChannel, Retry, RetryLimits, Security};
use proto::LeaseRefusal;
use rollout::config::RunConfig;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tasks::Problem;
use tokio::sync::watch;

/// What an actor did.
#[derive(Debug, Default, Clone)]
pub struct ActorSummary {
    pub leases: u64,
    pub groups_accepted: u64,
    pub groups_rejected: u64,
    /// Weight swaps made between decode steps of a lease (in-flight updates).
    pub in_flight_swaps: u64,
    /// Seconds spent waiting for newer weights (lag gate) or for work.
    pub idle_s: f64,
    /// Seconds spent generating.
    pub busy_s: f64,
}

/// Sleeps `wait`; true if `stop` is set first.
async fn pause(wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

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
    retry
        .run(|| {
            let (mut c, r) = (coord.clone(), request.clone());
            async move { c.register(r).await }
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(ActorError::Remote)
}

/// Connects to the coordinator, retrying with backoff while it is unreachable (it may start
/// after us, or be restarting); configuration errors (bad URL, TLS files) fail at once.
async fn connect(
    url: &str,
    security: &Security,
    deadline: Duration,
) -> Result<CoordinatorClient<ClientChannel>, ActorError> {
    let started = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(50);
    loop {
        match security.channel(url).await {
            Ok(c) => {
                return Ok(CoordinatorClient::new(c)
                    .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(proto::MAX_MESSAGE_BYTES))
            }
            Err(e) if !e.is_unreachable() => return Err(ActorError::Remote(e.to_string())),
            Err(e) if started.elapsed() > deadline => {
                return Err(ActorError::Remote(format!(
                    "coordinator {url} unreachable for {deadline:?}: {e}"
                )))
            }
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Serves `metrics` on `listener` until the returned sender is dropped.
fn serve_metrics(
    metrics: &Arc<ActorMetrics>,
    listener: tokio::net::TcpListener,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scraped = metrics.clone();
    let router = proto::metrics_http::metrics_router(move || scraped.render());
    tokio::spawn(async move {
        let stopped = async {
            let _ = stopped.await;
        };
        if let Err(e) = proto::metrics_http::serve(listener, router, stopped).await {
            tracing::warn!(error = %e, "the metrics server stopped");
        }
    });
    stop
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
    let _metrics_stop = metrics_listener.map(|l| serve_metrics(&metrics, l));
    let mut coord = connect(coordinator_url, &security, Duration::from_secs(60)).await?;
    // Calls to the coordinator and the learner ride out their restarts (retried with
    // backoff), and give up on a peer that stays down or stops answering.
    let request_timeout = security.timeouts().request;
    let to_coordinator = |what: &str| {
        Retry::new(
            format!("{what} the coordinator at {coordinator_url}"),
            RetryLimits::default(),
            request_timeout,
        )
    };
    let reg = register(&coord, name, &mut to_coordinator("registering with")).await?;
    let cfg = RunConfig::from_wire(&reg.run_config)?;
    // Shared with the heartbeats: a new id when the actor registers again.
    let (member_tx, member_rx) = watch::channel(reg.member_id.clone());
    let model = policy::default_model::load_model(&cfg.model)?;
    let source = cfg.problem_source(&tasks::VerifierRegistry::new())?;
    let verifier = source.verifier();
    let stop = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let versions = LearnerVersion::new(reg.learner_version);
    let learner_version = versions.current().clone();
    metrics.watch_learner_version(&learner_version);
    let held = Arc::new(AtomicU64::new(0));

    // Outside shutdown.
    {
        let (stop, stop_tx) = (stop.clone(), stop_tx.clone());
        tokio::spawn(async move {
            shutdown.await;
            stop.store(true, Ordering::Relaxed);
            let _ = stop_tx.send(true);
        });
    }
    // Heartbeats: liveness, the learner's version and address, and the run's end.
    let (addr_tx, mut addr_rx) = watch::channel(reg.learner_addr.clone());
    {
        let (mut coord, stop, stop_tx, lv, held) = (
            coord.clone(),
            stop.clone(),
            stop_tx.clone(),
            versions.clone(),
            held.clone(),
        );
        let member = member_rx.clone();
        let every = cfg
            .pipeline
            .heartbeat_interval()
            .max(Duration::from_millis(50));
        let mut stop_rx = stop_rx.clone();
        let url = coordinator_url.to_string();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                let req = proto::HeartbeatRequest {
                    member_id: member.borrow().clone(),
                    version: held.load(Ordering::Relaxed),
                };
                let beat = coord.heartbeat(req).await.map(|r| r.into_inner());
                match &beat {
                    Err(s) if !failing => {
                        tracing::warn!(coordinator = %url, error = %s.message(), "heartbeat failed; retrying");
                    }
                    Ok(_) if failing => {
                        tracing::info!(coordinator = %url, "heartbeats answered again")
                    }
                    _ => {}
                }
                failing = beat.is_err();
                if let Ok(r) = beat {
                    lv.heard_from_coordinator(r.learner_version);
                    if !r.learner_addr.is_empty() {
                        addr_tx.send_if_modified(|a| {
                            let changed = *a != r.learner_addr;
                            *a = r.learner_addr.clone();
                            changed
                        });
                    }
                    if r.stop {
                        if !stop.swap(true, Ordering::Relaxed) {
                            tracing::info!(
                                "the coordinator says the run is over (the learner is done or \
                                 the prompt pool is exhausted): stopping"
                            );
                        }
                        let _ = stop_tx.send(true);
                        return;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop_rx.wait_for(|s| *s) => return,
                }
            }
        });
    }
    // The learner's address comes with registration or a later heartbeat.
    let learner_addr = {
        let mut stop_rx = stop_rx.clone();
        tokio::select! {
            r = addr_rx.wait_for(|a| !a.is_empty()) => r.map(|a| a.clone()).map_err(|_| ActorError::Remote("heartbeats ended".into()))?,
            _ = stop_rx.wait_for(|s| *s) => return Ok(ActorSummary::default()),
        }
    };
    tracing::info!(learner = %learner_addr, "following the learner's weights");
    let (slot_tx, mut slot_rx) = watch::channel::<Option<Versioned>>(None);
    tokio::spawn(follow(
        addr_rx.clone(),
        security.clone(),
        model.config.clone(),
        slot_tx,
        versions.clone(),
        metrics.clone(),
        stop_rx.clone(),
    ));
    {
        let mut stop_rx = stop_rx.clone();
        tokio::select! {
            r = slot_rx.wait_for(|s| s.is_some()) => { r.map_err(|_| ActorError::Remote("weight stream ended".into()))?; }
            _ = stop_rx.wait_for(|s| *s) => return Ok(ActorSummary::default()),
        }
    }
    let mut learner = LearnerLink::new(security.clone(), addr_rx.clone());
    let mut leasing = to_coordinator("leasing from");
    let mut completing = to_coordinator("completing a lease with");
    let mut pushing = Retry::new(
        "pushing groups to the learner",
        RetryLimits::default(),
        request_timeout,
    );
    let mut stop_wait = stop_rx.clone();

    let mut summary = ActorSummary::default();
    let tok = model.tokenizer.clone();
    let eos = model.eos_ids();
    while !stop.load(Ordering::Relaxed) {
        let version = slot_rx.borrow().as_ref().map(|v| v.0).unwrap_or(0);
        held.store(version, Ordering::Relaxed);
        let idle = std::time::Instant::now();
        let lease = coord
            .lease(proto::LeaseRequest {
                member_id: member_rx.borrow().clone(),
                version,
                max_prompts: cfg.pipeline.prompts_per_lease as u32,
            })
            .await;
        let lease = match lease {
            Ok(l) => {
                leasing.succeeded();
                l.into_inner()
            }
            Err(s) if s.code() == tonic::Code::NotFound => {
                // Declared dead (e.g. after a long stall), or a coordinator restarted without
                // its journal: join again under a new id.
                let r =
                    register(&coord, name, &mut to_coordinator("registering again with")).await?;
                tracing::info!(member = %r.member_id, "registered again");
                member_tx.send_replace(r.member_id);
                continue;
            }
            Err(s) => {
                let wait = leasing.failed(&s).map_err(ActorError::Remote)?;
                if pause(wait, &mut stop_wait).await {
                    break;
                }
                continue;
            }
        };
        versions.heard_from_coordinator(lease.learner_version);
        match LeaseRefusal::try_from(lease.refused) {
            Ok(LeaseRefusal::Unspecified) => {}
            Ok(refusal @ (LeaseRefusal::Stopping | LeaseRefusal::Exhausted)) => {
                // Said once, by whichever noticed first (the heartbeats may have).
                let first = !stop.swap(true, Ordering::Relaxed);
                if first && refusal == LeaseRefusal::Exhausted {
                    tracing::info!(
                        "the coordinator's prompt pool is exhausted (every prompt retired or \
                         the epochs done): nothing left to generate; stopping"
                    );
                } else if first {
                    tracing::info!("the coordinator says the learner is done: stopping");
                }
                break;
            }
            Ok(LeaseRefusal::StaleWeights) => {
                let mut stop_rx = stop_rx.clone();
                tokio::select! {
                    _ = tokio::time::timeout(Duration::from_secs(1), slot_rx.changed()) => {}
                    _ = stop_rx.wait_for(|s| *s) => {}
                }
                summary.idle_s += idle.elapsed().as_secs_f64();
                metrics.idle(idle.elapsed());
                continue;
            }
            // Empty for now, or a refusal this actor does not know: ask again.
            Ok(LeaseRefusal::PoolEmpty) | Err(_) => {
                tracing::debug!(refused = lease.refused, "no lease");
                tokio::time::sleep(Duration::from_millis(100)).await;
                summary.idle_s += idle.elapsed().as_secs_f64();
                metrics.idle(idle.elapsed());
                continue;
            }
        }
        summary.idle_s += idle.elapsed().as_secs_f64();
        metrics.idle(idle.elapsed());
        summary.leases += 1;
        metrics.leases.inc();
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
        let mut params = cfg.sampling.clone();
        params.seed = cfg.seed ^ lease_seed(&lease.lease_id);
        if params.stop_tokens.is_empty() {
            params.stop_tokens = eos.clone();
        }
        let mut follow_state = Follow {
            slot: slot_rx.clone(),
            learner_version: learner_version.clone(),
            max_lag: cfg.update.max_lag,
            stop: stop.clone(),
            handle: tokio::runtime::Handle::current(),
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
        let (tok2, verifier2) = (tok.clone(), verifier.clone());
        let group_size = cfg.group_size;
        let busy = std::time::Instant::now();
        let generated = tokio::task::spawn_blocking(move || {
            generate_lease(
                &problems,
                &tok2,
                &verifier2,
                group_size,
                params,
                &group_ids,
                &mut follow_state,
            )
        })
        .await
        .map_err(|e| ActorError::Remote(format!("generation thread: {e}")))??;
        let elapsed = busy.elapsed();
        summary.busy_s += elapsed.as_secs_f64();
        let Some((groups, stats)) = generated else {
            break;
        };
        summary.in_flight_swaps += stats.swaps;
        summary.idle_s += stats.waited.as_secs_f64();
        summary.busy_s -= stats.waited.as_secs_f64();
        let tokens = groups.iter().map(|g| g.num_tokens() as u64).sum();
        metrics.idle(stats.waited);
        metrics.generated(elapsed.saturating_sub(stats.waited), tokens, stats.swaps);

        let wire: Vec<proto::RolloutGroup> = groups
            .iter()
            .map(|g| rollout::wire::to_wire(g, &lease.lease_id))
            .collect();
        metrics.groups_pushed.inc_by(wire.len() as u64);
        let Some(acks) = deliver(&mut learner, &wire, &mut pushing, &mut stop_wait).await? else {
            tracing::info!(learner = %learner.addr(), "stopping with groups undelivered");
            break;
        };
        for ack in acks {
            if ack.outcome == proto::push_ack::Outcome::Rejected as i32 {
                summary.groups_rejected += 1;
                metrics.groups_rejected.inc();
                tracing::warn!(group = %ack.group_id, reason = %ack.reason, "learner rejected a group");
            } else {
                summary.groups_accepted += 1;
                if ack.outcome == proto::push_ack::Outcome::Duplicate as i32 {
                    metrics.groups_duplicate.inc();
                } else {
                    metrics.groups_accepted.inc();
                }
            }
        }
        let results = groups
            .iter()
            .map(|g| proto::ProblemResult {
                problem_id: g.problem_id.clone(),
                rewards: g.samples.iter().map(|s| s.reward).collect(),
            })
            .collect();
        let completion = proto::CompleteRequest {
            member_id: member_rx.borrow().clone(),
            lease_id: lease.lease_id.clone(),
            results,
        };
        // A lease that expired meanwhile is answered as such: its prompts are already
        // leased again under the same group ids, which the learner now has.
        let completed = completing.run(|| {
            let (mut c, r) = (coord.clone(), completion.clone());
            async move { c.complete(r).await }
        });
        tokio::select! {
            done = completed => { done.map_err(ActorError::Remote)?; }
            _ = stop_wait.wait_for(|s| *s) => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    tracing::info!(?summary, "actor done");
    Ok(summary)
}

fn lease_seed(lease_id: &str) -> u64 {
    lease_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x1000_0000_01b3)
    })
}
