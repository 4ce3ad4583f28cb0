//! The actor's life: register, follow the weights, then lease -> generate -> push ->
//! complete until the coordinator says the run is over (or `shutdown`).

use crate::error::ActorError;
use crate::generate::{generate_lease, Follow};
use crate::subscriber::{follow, Versioned};
use proto::coordinator_client::CoordinatorClient;
use proto::learner_client::LearnerClient;
use proto::transport::{ClientChannel, Security};
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

fn remote(what: &str) -> impl Fn(tonic::Status) -> ActorError + '_ {
    move |s| ActorError::Remote(format!("{what}: {}", s.message()))
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

/// Runs one actor against the coordinator at `coordinator_url`.
/// `security` (token, TLS, timeouts) applies to its connections to the coordinator and the
/// learner.
pub async fn run_actor(
    coordinator_url: &str,
    name: &str,
    security: Security,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<ActorSummary, ActorError> {
    let mut coord = connect(coordinator_url, &security, Duration::from_secs(60)).await?;
    let reg = coord
        .register(proto::RegisterRequest {
            role: proto::Role::Actor as i32,
            advertise_addr: String::new(),
            name: name.into(),
        })
        .await
        .map_err(remote("registering"))?
        .into_inner();
    let cfg: RunConfig =
        toml::from_str(&reg.run_config_toml).map_err(|e| ActorError::Config(e.to_string()))?;
    let mut member = reg.member_id.clone();
    let model = policy::default_model::load_model(&cfg.model)?;
    let source = tasks::from_spec(&cfg.task, cfg.seed, &tasks::VerifierRegistry::new())?;
    let verifier = source.verifier();
    let stop = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let learner_version = Arc::new(AtomicU64::new(reg.learner_version));
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
            learner_version.clone(),
            held.clone(),
        );
        let member = member.clone();
        let every = Duration::from_millis(reg.heartbeat_interval_ms.max(50));
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                let req = proto::HeartbeatRequest {
                    member_id: member.clone(),
                    version: held.load(Ordering::Relaxed),
                };
                if let Ok(r) = coord.heartbeat(req).await.map(|r| r.into_inner()) {
                    lv.fetch_max(r.learner_version, Ordering::Relaxed);
                    if !r.learner_addr.is_empty() {
                        addr_tx.send_if_modified(|a| {
                            let changed = *a != r.learner_addr;
                            *a = r.learner_addr.clone();
                            changed
                        });
                    }
                    if r.stop {
                        stop.store(true, Ordering::Relaxed);
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
    let (slot_tx, mut slot_rx) = watch::channel::<Option<Versioned>>(None);
    tokio::spawn(follow(
        learner_addr.clone(),
        security.clone(),
        model.config.clone(),
        slot_tx,
        learner_version.clone(),
        stop_rx.clone(),
    ));
    {
        let mut stop_rx = stop_rx.clone();
        tokio::select! {
            r = slot_rx.wait_for(|s| s.is_some()) => { r.map_err(|_| ActorError::Remote("weight stream ended".into()))?; }
            _ = stop_rx.wait_for(|s| *s) => return Ok(ActorSummary::default()),
        }
    }
    let mut learner = LearnerClient::new(
        security
            .channel(&learner_addr)
            .await
            .map_err(|e| ActorError::Remote(format!("learner {learner_addr}: {e}")))?,
    )
    .max_encoding_message_size(proto::MAX_MESSAGE_BYTES);

    let mut summary = ActorSummary::default();
    let tok = model.tokenizer.clone();
    let eos = model.eos_ids();
    while !stop.load(Ordering::Relaxed) {
        let version = slot_rx.borrow().as_ref().map(|v| v.0).unwrap_or(0);
        held.store(version, Ordering::Relaxed);
        let idle = std::time::Instant::now();
        let lease = coord
            .lease(proto::LeaseRequest {
                member_id: member.clone(),
                version,
                max_prompts: cfg.pipeline.prompts_per_lease as u32,
            })
            .await;
        let lease = match lease {
            Ok(l) => l.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => {
                // Declared dead (e.g. after a long stall): join again under a new id.
                let r = coord
                    .register(proto::RegisterRequest {
                        role: proto::Role::Actor as i32,
                        advertise_addr: String::new(),
                        name: name.into(),
                    })
                    .await
                    .map_err(remote("registering again"))?;
                member = r.into_inner().member_id;
                continue;
            }
            Err(s) => return Err(remote("leasing")(s)),
        };
        learner_version.fetch_max(lease.learner_version, Ordering::Relaxed);
        match lease.refused.as_str() {
            "" => {}
            "stopping" => break,
            "stale_weights" => {
                let mut stop_rx = stop_rx.clone();
                tokio::select! {
                    _ = tokio::time::timeout(Duration::from_secs(1), slot_rx.changed()) => {}
                    _ = stop_rx.wait_for(|s| *s) => {}
                }
                summary.idle_s += idle.elapsed().as_secs_f64();
                continue;
            }
            other => {
                tracing::debug!(reason = other, "no lease");
                tokio::time::sleep(Duration::from_millis(100)).await;
                summary.idle_s += idle.elapsed().as_secs_f64();
                continue;
            }
        }
        summary.idle_s += idle.elapsed().as_secs_f64();
        summary.leases += 1;
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
            max_lag: reg.max_lag,
            stop: stop.clone(),
            handle: tokio::runtime::Handle::current(),
        };
        let (tok2, verifier2, lease_id) = (tok.clone(), verifier.clone(), lease.lease_id.clone());
        let group_size = cfg.group_size;
        let busy = std::time::Instant::now();
        let generated = tokio::task::spawn_blocking(move || {
            generate_lease(
                &problems,
                &tok2,
                &verifier2,
                group_size,
                params,
                &lease_id,
                &mut follow_state,
            )
        })
        .await
        .map_err(|e| ActorError::Remote(format!("generation thread: {e}")))??;
        summary.busy_s += busy.elapsed().as_secs_f64();
        let Some((groups, stats)) = generated else {
            break;
        };
        summary.in_flight_swaps += stats.swaps;
        summary.idle_s += stats.waited.as_secs_f64();
        summary.busy_s -= stats.waited.as_secs_f64();

        let wire: Vec<proto::RolloutGroup> = groups
            .iter()
            .map(|g| rollout::wire::to_wire(g, &lease.lease_id))
            .collect();
        let mut acks = learner
            .push_rollouts(tokio_stream::iter(wire))
            .await
            .map_err(remote("pushing rollouts"))?
            .into_inner();
        while let Some(ack) = acks
            .message()
            .await
            .map_err(remote("reading acknowledgements"))?
        {
            if ack.outcome == proto::push_ack::Outcome::Rejected as i32 {
                summary.groups_rejected += 1;
                tracing::warn!(group = %ack.group_id, reason = %ack.reason, "learner rejected a group");
            } else {
                summary.groups_accepted += 1;
            }
        }
        let results = groups
            .iter()
            .map(|g| proto::ProblemResult {
                problem_id: g.problem_id.clone(),
                rewards: g.samples.iter().map(|s| s.reward).collect(),
            })
            .collect();
        coord
            .complete(proto::CompleteRequest {
                member_id: member.clone(),
                lease_id: lease.lease_id.clone(),
                results,
            })
            .await
            .map_err(remote("completing a lease"))?;
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
