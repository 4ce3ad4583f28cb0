//! The learner as a server (`oxrl learner`): registers with the coordinator, takes rollout
//! groups over gRPC, trains on them with the same update as the synchronous loop, and
//! streams every new version's weights to subscribed actors.
//!
//! Threads: the tonic server runs on the async runtime; training runs on its own thread
//! (`trainer.rs`) so gRPC keeps answering while a step computes. They meet at a bounded
//! queue of groups (backpressure) and a watch channel of encoded versions. A third task
//! watches the coordinator for the end of the rollouts (`exhaustion.rs`).

mod exhaustion;
mod intake;
mod ledger;
pub mod metrics;
mod service;
mod trainer;
pub use trainer::check_gpus;
pub(crate) mod weights;

use crate::error::{LearnerError, Result};
use crate::params::TrainableModel;
use proto::coordinator_client::CoordinatorClient;
use proto::transport::{ClientChannel, Retry, RetryLimits, Security};
use rollout::config::RunConfig;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub use metrics::LearnerMetrics;
pub use weights::EncodedVersion;

/// Counters the server keeps besides the metrics log.
#[derive(Debug, Default)]
pub struct IntakeCounters {
    pub accepted: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
}

/// State shared by the gRPC handlers and the trainer.
pub(crate) struct Shared {
    pub version: AtomicU64,
    pub weights: watch::Sender<Arc<EncodedVersion>>,
    pub seen_groups: Mutex<HashSet<String>>,
    pub known_leases: Mutex<HashSet<String>>,
    pub queue: mpsc::Sender<rollout::RolloutGroup>,
    pub vocab_size: usize,
    pub coordinator: CoordinatorClient<ClientChannel>,
    pub counters: IntakeCounters,
    pub metrics: Arc<LearnerMetrics>,
    /// The client's request timeout (quoted when the coordinator stops answering).
    pub request_timeout: Duration,
}

/// Connects to the coordinator with `security` (TLS, token, timeouts), retrying until
/// `deadline` while it is unreachable (it may start after us); configuration errors fail at
/// once.
pub async fn connect_coordinator(
    url: &str,
    security: &Security,
    deadline: Duration,
) -> Result<CoordinatorClient<ClientChannel>> {
    let started = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(50);
    loop {
        match security.channel(url).await {
            Ok(channel) => {
                return Ok(CoordinatorClient::new(channel)
                    .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(proto::MAX_MESSAGE_BYTES))
            }
            Err(e) if !e.is_unreachable() => {
                return Err(LearnerError::Remote(format!("coordinator {url}: {e}")))
            }
            Err(e) if started.elapsed() < deadline => {
                tracing::debug!(url, error = %e, "coordinator not reachable yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                return Err(LearnerError::Remote(format!(
                    "coordinator {url} unreachable for {deadline:?}: {e}"
                )))
            }
        }
    }
}

/// What the learner did, when it finishes.
#[derive(Debug, Clone)]
pub struct LearnerSummary {
    pub steps: u64,
    pub version: u64,
    pub last_eval: Option<f64>,
}

/// How a learner process runs: the `oxrl learner` flags, resolved.
pub struct LearnerLaunch {
    /// The coordinator's URL.
    pub coordinator_url: String,
    /// Token, TLS and timeouts for its server and its connection to the coordinator.
    pub security: Security,
    /// The URL actors should use to reach this learner.
    pub advertise: String,
    /// The run directory (resumed from its checkpoints).
    pub out: PathBuf,
    /// Where Prometheus `GET /metrics` is served from the start until the learner returns.
    pub metrics_listener: Option<tokio::net::TcpListener>,
    /// GPUs to train on (0: the CPU); see [`check_gpus`].
    pub gpus: usize,
}

/// Runs the learner role on the already-bound `listener` until the run's last step (or
/// `shutdown`).
pub async fn run_learner(
    launch: LearnerLaunch,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<LearnerSummary> {
    let LearnerLaunch {
        coordinator_url,
        security,
        advertise,
        out,
        metrics_listener,
        gpus,
    } = launch;
    let coordinator_url = coordinator_url.as_str();
    let metrics = Arc::new(LearnerMetrics::new());
    // Dropped when this function returns, which stops the metrics server.
    let (_metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(metrics_listener) = metrics_listener {
        let scraped = metrics.clone();
        let router = proto::metrics_http::metrics_router(move || scraped.render());
        tokio::spawn(async move {
            let stopped = async {
                let _ = metrics_stopped.await;
            };
            if let Err(e) = proto::metrics_http::serve(metrics_listener, router, stopped).await {
                tracing::warn!(error = %e, "the metrics server stopped");
            }
        });
    }
    let coordinator =
        connect_coordinator(coordinator_url, &security, Duration::from_secs(60)).await?;
    let request_timeout = security.timeouts().request;
    let register = proto::RegisterRequest {
        role: proto::Role::Learner as i32,
        advertise_addr: advertise.clone(),
        name: "learner".into(),
    };
    let reply = Retry::new(
        format!("registering with the coordinator at {coordinator_url}"),
        RetryLimits::default(),
        request_timeout,
    )
    .run(|| {
        let (mut c, r) = (coordinator.clone(), register.clone());
        async move { c.register(r).await }
    })
    .await
    .map_err(LearnerError::Remote)?
    .into_inner();
    let cfg = RunConfig::from_wire(&reply.run_config)?;
    std::fs::create_dir_all(&out).map_err(|e| LearnerError::io(&out, e))?;
    std::fs::write(out.join("config.toml"), &reply.run_config)
        .map_err(|e| LearnerError::io(&out, e))?;

    let start = trainer::Start::load(&cfg, &out, gpus)?;
    let model: &TrainableModel = start.model();
    let vocab_size = model.config.vocab_size;
    let encoding = std::time::Instant::now();
    let first = Arc::new(EncodedVersion::encode(start.version(), model)?);
    metrics
        .weight_encode_seconds
        .observe(encoding.elapsed().as_secs_f64());
    metrics.version.set(start.version() as i64);
    metrics.steps.inc_by(start.step());
    let (weights_tx, _) = watch::channel(first);
    let (queue_tx, queue_rx) = mpsc::channel(cfg.pipeline.learner_queue.max(1));
    metrics.watch_queue(&queue_tx);
    let shared = Arc::new(Shared {
        version: AtomicU64::new(start.version()),
        weights: weights_tx,
        // A resumed learner refuses what its checkpoint was trained on, as it did before.
        seen_groups: Mutex::new(ledger::trained_up_to(&out, start.step())?),
        known_leases: Mutex::new(HashSet::new()),
        queue: queue_tx,
        vocab_size,
        coordinator: coordinator.clone(),
        counters: IntakeCounters::default(),
        metrics,
        request_timeout,
    });
    let first_version = proto::PublishVersionRequest {
        version: start.version(),
        ..Default::default()
    };
    Retry::new(
        format!("publishing the first version to the coordinator at {coordinator_url}"),
        RetryLimits::default(),
        request_timeout,
    )
    .run(|| {
        let (mut c, r) = (coordinator.clone(), first_version.clone());
        async move { c.publish_version(r).await }
    })
    .await
    .map_err(LearnerError::Remote)?;

    // One stop signal for the server and the trainer: the run's end or an outside shutdown.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let outside = stop_tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = outside.send(true);
    });
    // The end of the rollouts (the prompt pool exhausted), from the coordinator's status.
    let (exhausted_tx, exhausted_rx) = watch::channel(false);
    tokio::spawn(exhaustion::watch_pool(
        coordinator.clone(),
        cfg.pipeline
            .heartbeat_interval()
            .clamp(Duration::from_millis(50), Duration::from_secs(2)),
        exhausted_tx,
        stop_rx.clone(),
    ));
    let server = tokio::spawn(service::serve(
        shared.clone(),
        listener,
        security,
        stop_rx.clone(),
    ));
    let handle = tokio::runtime::Handle::current();
    let trainer_shared = shared.clone();
    let out_dir = out.clone();
    let trainer = std::thread::Builder::new()
        .name("oxrl-trainer".into())
        .spawn(move || {
            let ends = trainer::Ends {
                stop: stop_rx,
                exhausted: exhausted_rx,
            };
            trainer::train(cfg, out, start, queue_rx, trainer_shared, handle, ends)
        })
        .map_err(|e| LearnerError::io("<trainer thread>", e))?;
    let summary = tokio::task::spawn_blocking(move || trainer.join())
        .await
        .map_err(|e| LearnerError::Remote(format!("trainer thread: {e}")))?
        .map_err(|_| LearnerError::Remote("the trainer thread panicked".into()))??;
    // Actors learn that the run is over from the coordinator; give their last streams a
    // moment to close, then stop serving.
    let _ = stop_tx.send(true);
    server
        .await
        .map_err(|e| LearnerError::Remote(format!("server task: {e}")))??;
    let counters = serde_json::json!({
        "steps": summary.steps,
        "version": summary.version,
        "accepted": shared.counters.accepted.load(Ordering::Relaxed),
        "duplicates": shared.counters.duplicates.load(Ordering::Relaxed),
        "rejected": shared.counters.rejected.load(Ordering::Relaxed),
    });
    let path = out_dir.join("learner_summary.json");
    std::fs::write(&path, counters.to_string()).map_err(|e| LearnerError::io(&path, e))?;
    tracing::info!(
        version = summary.version,
        accepted = shared.counters.accepted.load(Ordering::Relaxed),
        duplicates = shared.counters.duplicates.load(Ordering::Relaxed),
        rejected = shared.counters.rejected.load(Ordering::Relaxed),
        "learner done"
    );
    Ok(summary)
}
