//! The learner as a server (`oxrl learner`): registers with the coordinator, takes rollout
//! groups over gRPC, trains on them with the same update as the synchronous loop, and
//! streams every new version's weights to subscribed actors.
//!
//! Threads: the tonic server runs on the async runtime; training runs on its own thread
//! (`trainer.rs`) so gRPC keeps answering while a step computes. They meet at a bounded
//! queue of groups (backpressure) and a watch channel of encoded versions.

mod intake;
mod service;
mod trainer;
mod weights;

use crate::error::{LearnerError, Result};
use crate::params::TrainableModel;
use proto::coordinator_client::CoordinatorClient;
use proto::transport::{ClientChannel, Security};
use rollout::config::RunConfig;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

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

/// Runs the learner role until the run's last step (or `shutdown`).
/// `listener` is already bound; `advertise` is the URL actors should use to reach it.
/// `security` applies to its server and to its connection to the coordinator.
pub async fn run_learner(
    coordinator_url: &str,
    security: Security,
    listener: tokio::net::TcpListener,
    advertise: String,
    out: PathBuf,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<LearnerSummary> {
    let mut coordinator =
        connect_coordinator(coordinator_url, &security, Duration::from_secs(60)).await?;
    let reply = coordinator
        .register(proto::RegisterRequest {
            role: proto::Role::Learner as i32,
            advertise_addr: advertise.clone(),
            name: "learner".into(),
        })
        .await
        .map_err(|s| {
            LearnerError::Remote(format!("registering with the coordinator: {}", s.message()))
        })?
        .into_inner();
    let cfg: RunConfig = toml::from_str(&reply.run_config_toml).map_err(|e| {
        LearnerError::Remote(format!("the coordinator's run config does not parse: {e}"))
    })?;
    std::fs::create_dir_all(&out).map_err(|e| LearnerError::io(&out, e))?;
    std::fs::write(out.join("config.toml"), &reply.run_config_toml)
        .map_err(|e| LearnerError::io(&out, e))?;

    let start = trainer::Start::load(&cfg, &out)?;
    let model: &TrainableModel = start.model();
    let vocab_size = model.config.vocab_size;
    let first = Arc::new(EncodedVersion::encode(start.version(), model)?);
    let (weights_tx, _) = watch::channel(first);
    let (queue_tx, queue_rx) = mpsc::channel(cfg.pipeline.learner_queue.max(1));
    let shared = Arc::new(Shared {
        version: AtomicU64::new(start.version()),
        weights: weights_tx,
        seen_groups: Mutex::new(HashSet::new()),
        known_leases: Mutex::new(HashSet::new()),
        queue: queue_tx,
        vocab_size,
        coordinator: coordinator.clone(),
        counters: IntakeCounters::default(),
    });
    coordinator
        .publish_version(proto::PublishVersionRequest {
            version: start.version(),
            ..Default::default()
        })
        .await
        .map_err(|s| LearnerError::Remote(format!("publishing version: {}", s.message())))?;

    // One stop signal for the server and the trainer: the run's end or an outside shutdown.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let outside = stop_tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = outside.send(true);
    });
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
        .spawn(move || trainer::train(cfg, out, start, queue_rx, trainer_shared, handle, stop_rx))
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
