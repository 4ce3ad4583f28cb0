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
mod lineage;
pub mod metrics;
mod seen;
mod service;
mod trainer;
pub use trainer::check_gpus;
pub(crate) mod weights;

use crate::error::{LearnerError, Result};
use crate::params::TrainableModel;
use proto::coordinator_client::CoordinatorClient;
use proto::shutdown::Shutdown;
use proto::transport::{ClientChannel, Retry, RetryLimits, Security};
use rollout::config::RunConfig;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub use metrics::LearnerMetrics;
pub use weights::{EncodedVersion, Publisher};

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
    /// Encodes each new version in the run's `weight_sync` mode (the trainer's alone; in
    /// `Shared` because the first version is encoded before the trainer starts).
    pub publisher: Mutex<Publisher>,
    /// The groups taken, bounded by the coordinator's settled horizon (`seen.rs`).
    pub seen_groups: Mutex<seen::SeenGroups>,
    /// The versions this learner life stands on: groups sampled with others are refused.
    pub lineage: rollout::Lineage,
    /// Groups refused for good at intake, to be named durable with the next checkpoint's
    /// report (their prompts are done: see `trainer::Trainer::report_durable`).
    pub refused_groups: Mutex<Vec<String>>,
    pub known_leases: Mutex<HashSet<String>>,
    pub queue: mpsc::Sender<rollout::RolloutGroup>,
    pub vocab_size: usize,
    pub coordinator: CoordinatorClient<ClientChannel>,
    pub counters: IntakeCounters,
    pub metrics: Arc<LearnerMetrics>,
    /// The client's request timeout (quoted when the coordinator stops answering).
    pub request_timeout: Duration,
}

/// How long the learner waits for the coordinator to accept connections at start.
const CONNECT_DEADLINE: Duration = Duration::from_secs(60);

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
    let metrics = Arc::new(LearnerMetrics::new());
    // Dropped when this function returns, which stops the metrics server.
    let _metrics_server = metrics_listener
        .map(|l| {
            let scraped = metrics.clone();
            proto::metrics_http::spawn(
                l,
                proto::metrics_http::metrics_router(move || scraped.render()),
                &security,
            )
        })
        .transpose()
        .map_err(|e| LearnerError::Server(format!("metrics port: {e}")))?;
    let coordinator =
        proto::transport::connect_coordinator(&security, &coordinator_url, CONNECT_DEADLINE)
            .await?;
    let request_timeout = security.timeouts().request;
    // Calls to the coordinator ride out its restarts (retried with backoff).
    let to_coordinator = |what: &str| {
        Retry::new(
            format!("{what} the coordinator at {coordinator_url}"),
            RetryLimits::default(),
            request_timeout,
        )
    };
    let reply = register(
        &coordinator,
        &advertise,
        &mut to_coordinator("registering with"),
    )
    .await?;
    let cfg = save_run_config(&reply.run_config, &out)?;
    let start = trainer::Start::load(&cfg, &out, gpus)?;
    let history = lineage::start(&out, start.step(), start.version())?;
    let (shared, queue) = share_state(
        &start,
        &cfg,
        &out,
        history,
        (coordinator, metrics),
        request_timeout,
    )?;
    publish_first_version(
        &shared,
        start.version(),
        &mut to_coordinator("publishing the first version to"),
    )
    .await?;

    // One stop signal for the server and the trainer: the run's end or an outside shutdown.
    let stop = Shutdown::on(shutdown);
    // The end of the rollouts (the prompt pool exhausted), from the coordinator's status.
    let (exhausted_tx, exhausted) = watch::channel(false);
    tokio::spawn(exhaustion::watch_pool(
        shared.coordinator.clone(),
        cfg.pipeline
            .heartbeat_interval()
            .clamp(Duration::from_millis(50), Duration::from_secs(2)),
        exhausted_tx,
        stop.receiver(),
    ));
    let server = tokio::spawn(service::serve(
        shared.clone(),
        listener,
        security,
        stop.receiver(),
    ));
    let ends = trainer::Ends {
        stop: stop.receiver(),
        exhausted,
    };
    let summary = run_trainer(cfg, out.clone(), start, queue, shared.clone(), ends).await?;
    // Actors learn that the run is over from the coordinator; give their last streams a
    // moment to close, then stop serving.
    stop.trigger();
    server.await.map_err(|e| LearnerError::Thread {
        what: "the learner's server task",
        reason: e.to_string(),
    })??;
    write_summary(&out, &summary, &shared.counters)?;
    Ok(summary)
}

/// Registers as the learner reachable at `advertise`, retrying while the coordinator is down.
async fn register(
    coordinator: &CoordinatorClient<ClientChannel>,
    advertise: &str,
    retry: &mut Retry,
) -> Result<proto::RegisterReply> {
    let request = proto::RegisterRequest {
        role: proto::Role::Learner as i32,
        advertise_addr: advertise.to_string(),
        name: "learner".into(),
    };
    Ok(proto::transport::register(coordinator, request, retry).await?)
}

/// Decodes and validates the coordinator's run config and saves it as `out/config.toml`,
/// beside what the run writes.
fn save_run_config(wire: &str, out: &std::path::Path) -> Result<RunConfig> {
    let cfg = RunConfig::from_wire(wire)?;
    std::fs::create_dir_all(out).map_err(|e| LearnerError::io(out, e))?;
    std::fs::write(out.join("config.toml"), wire).map_err(|e| LearnerError::io(out, e))?;
    Ok(cfg)
}

/// The state the gRPC handlers and the trainer share, starting from `start`'s weights, and
/// the receiving end of the bounded group queue between them.
fn share_state(
    start: &trainer::Start,
    cfg: &RunConfig,
    out: &std::path::Path,
    history: rollout::Lineage,
    (coordinator, metrics): (CoordinatorClient<ClientChannel>, Arc<LearnerMetrics>),
    request_timeout: Duration,
) -> Result<(Arc<Shared>, mpsc::Receiver<rollout::RolloutGroup>)> {
    let model: &TrainableModel = start.model();
    let encoding = std::time::Instant::now();
    let mut publisher = Publisher::new(cfg.pipeline.weight_sync);
    let first = Arc::new(publisher.publish(start.version(), history.current(), model)?);
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
        publisher: Mutex::new(publisher),
        // A resumed learner refuses what its checkpoint was trained on, as it did before.
        seen_groups: Mutex::new(seen::SeenGroups::new(ledger::trained_up_to(
            out,
            start.step(),
        )?)),
        lineage: history,
        known_leases: Mutex::new(HashSet::new()),
        refused_groups: Mutex::new(Vec::new()),
        queue: queue_tx,
        vocab_size: model.config.vocab_size,
        coordinator,
        counters: IntakeCounters::default(),
        metrics,
        request_timeout,
    });
    Ok((shared, queue_rx))
}

/// Tells the coordinator the version the learner starts from (actors may lease with it).
async fn publish_first_version(shared: &Shared, version: u64, retry: &mut Retry) -> Result<()> {
    let request = proto::PublishVersionRequest {
        version,
        ..Default::default()
    };
    retry
        .run(|| {
            let (mut c, r) = (shared.coordinator.clone(), request.clone());
            async move { c.publish_version(r).await }
        })
        .await?;
    Ok(())
}

/// Runs `trainer::train` on its own thread (so gRPC keeps answering while a step computes)
/// and waits for it without blocking the runtime.
async fn run_trainer(
    cfg: RunConfig,
    out: PathBuf,
    start: trainer::Start,
    queue: mpsc::Receiver<rollout::RolloutGroup>,
    shared: Arc<Shared>,
    ends: trainer::Ends,
) -> Result<LearnerSummary> {
    let handle = tokio::runtime::Handle::current();
    let trainer = std::thread::Builder::new()
        .name("oxrl-trainer".into())
        .spawn(move || trainer::train(cfg, out, start, queue, shared, handle, ends))
        .map_err(|e| LearnerError::io("<trainer thread>", e))?;
    tokio::task::spawn_blocking(move || trainer.join())
        .await
        .map_err(|e| LearnerError::Thread {
            what: "waiting for the trainer thread",
            reason: e.to_string(),
        })?
        .map_err(|_| LearnerError::Thread {
            what: "the trainer thread",
            reason: "panicked".into(),
        })?
}

/// Writes `learner_summary.json` (steps, version, intake counters) and logs the same.
fn write_summary(
    out: &std::path::Path,
    summary: &LearnerSummary,
    counters: &IntakeCounters,
) -> Result<()> {
    let (accepted, duplicates, rejected) = (
        counters.accepted.load(Ordering::Relaxed),
        counters.duplicates.load(Ordering::Relaxed),
        counters.rejected.load(Ordering::Relaxed),
    );
    let json = serde_json::json!({
        "steps": summary.steps,
        "version": summary.version,
        "accepted": accepted,
        "duplicates": duplicates,
        "rejected": rejected,
    });
    let path = out.join("learner_summary.json");
    std::fs::write(&path, json.to_string()).map_err(|e| LearnerError::io(&path, e))?;
    tracing::info!(
        version = summary.version,
        accepted,
        duplicates,
        rejected,
        "learner done"
    );
    Ok(())
}
