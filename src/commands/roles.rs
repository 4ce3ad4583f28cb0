//! `oxrl coordinator`, `oxrl learner`, `oxrl actor`: one role per process, as `oxrl run`
//! starts them on one machine or a cluster runs them on many. Each prints
//! `OXRL_LISTENING <addr>` on stdout once its server is bound (servers bind port 0 fine).
//! The process plumbing here (security flags, binding, shutdown) serves `oxrl env serve`
//! (`env.rs`) and `oxrl rm serve` (`rm_serve.rs`) too.

use crate::children::{LISTENING, METRICS};
use crate::config::load_config;
use anyhow::Context;
use std::path::PathBuf;

/// Authentication and TLS, the same flags on every role. The token itself may also come from
/// `OXRL_AUTH_TOKEN` (never a flag: command lines are visible to every user of a machine).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SecurityArgs {
    /// File holding the bearer token every RPC must carry (servers) and sends (clients);
    /// without it, `OXRL_AUTH_TOKEN` is the token; with neither, no token is required.
    #[arg(long, env = "OXRL_AUTH_TOKEN_FILE")]
    auth_token_file: Option<PathBuf>,
    /// This process's TLS certificate chain (PEM); its servers then speak TLS only.
    #[arg(long, env = proto::transport::TLS_CERT_ENV, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = proto::transport::TLS_KEY_ENV, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that signed the servers' certificates; clients then dial TLS only.
    #[arg(long, env = proto::transport::TLS_CA_ENV)]
    tls_ca: Option<PathBuf>,
}

impl SecurityArgs {
    /// Reads the token and certificates; any unreadable or malformed file is an error here,
    /// at start-up.
    pub fn load(&self) -> anyhow::Result<proto::transport::Security> {
        let files = proto::transport::SecurityFiles {
            auth_token_file: self.auth_token_file.clone(),
            auth_token_env: std::env::var(proto::transport::TOKEN_ENV).ok(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_ca: self.tls_ca.clone(),
        };
        let security = proto::transport::Security::load(&files)
            .context("loading the auth token / TLS files")?;
        tracing::info!(?security, "transport security");
        Ok(security)
    }
}

/// The flags of every role process besides its own: transport security, and whether it exits
/// with its parent.
#[derive(clap::Args)]
pub struct ProcessArgs {
    #[command(flatten)]
    pub(crate) security: SecurityArgs,
    /// Exit when standard input closes (set by `oxrl run`, so no child outlives it).
    #[arg(long, hide = true)]
    pub(crate) exit_with_parent: bool,
}

#[derive(clap::Args)]
pub struct CoordinatorArgs {
    /// Address to listen on (port 0: the OS picks one).
    #[arg(long, default_value = "0.0.0.0:7000")]
    listen: String,
    /// Run config (TOML); handed to the learner and actors when they register.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Append-only journal of the pool, leases and curriculum; a coordinator restarted with
    /// the same journal carries on the run where it stopped.
    #[arg(long)]
    journal: Option<PathBuf>,
    /// Compact the journal (snapshot to `<journal>.snapshot`, fresh tail) once its tail holds
    /// this many records; 0: never (docs/fault-tolerance.md).
    #[arg(long, default_value_t = coordinator::DEFAULT_COMPACT_EVERY)]
    journal_compact_records: u64,
    /// Serve Prometheus `GET /metrics` and the live dashboard (`GET /`, `GET /api/status`)
    /// over HTTP on this address, e.g. 0.0.0.0:9000 (docs/dashboard.md).
    #[arg(long)]
    metrics_listen: Option<String>,
    #[command(flatten)]
    process: ProcessArgs,
}

#[derive(clap::Args)]
pub struct LearnerArgs {
    /// Coordinator URL, e.g. http://127.0.0.1:7000.
    #[arg(long)]
    coordinator: String,
    #[arg(long, default_value = "0.0.0.0:7001")]
    listen: String,
    /// URL actors use to reach this learner (default: http://<bound address>).
    #[arg(long)]
    advertise: Option<String>,
    /// Run directory: metrics.jsonl, checkpoints/, final/ (resumes from its checkpoints).
    #[arg(long, default_value = "runs/latest")]
    out: PathBuf,
    /// Serve Prometheus `GET /metrics` (HTTP) on this address, e.g. 0.0.0.0:9001.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Train on this many GPUs of this node (0: the CPU): rank i on GPU i, gradients summed
    /// over NCCL. Needs a build with --features cuda (and nccl for more than one).
    #[arg(long, default_value_t = 0)]
    gpus: usize,
    #[command(flatten)]
    process: ProcessArgs,
}

#[derive(clap::Args)]
pub struct ActorArgs {
    /// Coordinator URL, e.g. http://127.0.0.1:7000.
    #[arg(long)]
    coordinator: String,
    /// Name shown in the coordinator's status.
    #[arg(long, default_value = "actor")]
    name: String,
    /// Serve Prometheus `GET /metrics` (HTTP) on this address, e.g. 0.0.0.0:9002; served
    /// from start, before the actor has weights, so probes can use it.
    #[arg(long)]
    metrics_listen: Option<String>,
    #[command(flatten)]
    process: ProcessArgs,
}

/// Resolves on Ctrl-C, SIGTERM, or (with `exit_with_parent`) when stdin closes.
pub(crate) async fn shutdown_signal(exit_with_parent: bool) {
    let parent_gone = async {
        if exit_with_parent {
            use tokio::io::AsyncReadExt;
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) => break tracing::info!("standard input closed: the parent is gone"),
                    Ok(_) => {}
                    Err(e) => {
                        break tracing::info!(error = %e, "standard input failed: the parent is gone")
                    }
                }
            }
        } else {
            std::future::pending::<()>().await
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
        _ = term.recv() => tracing::info!("terminated"),
        _ = parent_gone => {}
    }
}

pub(crate) async fn bind(
    addr: &str,
) -> anyhow::Result<(tokio::net::TcpListener, std::net::SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    println!("{LISTENING} {local}");
    Ok((listener, local))
}

/// Runs a role to completion. The runtime is shut down in the background: the stdin
/// watcher sits in a blocking read that would otherwise keep the process alive.
pub(crate) fn block_on<T>(
    role: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let out = rt.block_on(role);
    rt.shutdown_background();
    out
}

pub fn coordinator(a: CoordinatorArgs) -> anyhow::Result<()> {
    let cfg = match &a.config {
        Some(p) => load_config(p)?,
        None => learner::RunConfig::default(),
    };
    let security = a.process.security.load()?;
    // Validates the config: a value that cannot be meant stops the coordinator here.
    let journal = a.journal.clone().map(|path| coordinator::JournalOptions {
        path,
        compact_every: a.journal_compact_records,
    });
    let state = coordinator::Coordinator::new(cfg, journal).context("starting the coordinator")?;
    block_on(async {
        let metrics = bind_metrics(a.metrics_listen.as_deref()).await?;
        let (listener, _) = bind(&a.listen).await?;
        let shutdown = shutdown_signal(a.process.exit_with_parent);
        match metrics {
            Some(http) => {
                coordinator::serve_with_dashboard(state, listener, http, security, shutdown).await?
            }
            None => coordinator::serve_secured(state, listener, security, shutdown).await?,
        }
        Ok(())
    })
}

/// Binds `--metrics-listen` when given and prints `OXRL_METRICS <addr>`.
pub(crate) async fn bind_metrics(
    addr: Option<&str>,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))?;
    println!("{METRICS} {}", listener.local_addr()?);
    Ok(Some(listener))
}

pub fn learner(a: LearnerArgs) -> anyhow::Result<()> {
    learner::server::check_gpus(a.gpus)?;
    let security = a.process.security.load()?;
    // Remote environments (the in-run evaluation's episodes) are dialled the same way.
    learner::episodes::use_security(&security);
    block_on(async {
        let metrics = bind_metrics(a.metrics_listen.as_deref()).await?;
        let (listener, local) = bind(&a.listen).await?;
        let advertise = a
            .advertise
            .clone()
            .unwrap_or_else(|| security.advertise_url(local));
        let launch = learner::server::LearnerLaunch {
            coordinator_url: a.coordinator.clone(),
            security,
            advertise,
            out: a.out.clone(),
            metrics_listener: metrics,
            gpus: a.gpus,
        };
        let summary = learner::server::run_learner(
            launch,
            listener,
            shutdown_signal(a.process.exit_with_parent),
        )
        .await?;
        tracing::info!(steps = summary.steps, version = summary.version, eval = ?summary.last_eval, "learner finished");
        Ok(())
    })
}

pub fn actor(a: ActorArgs) -> anyhow::Result<()> {
    let security = a.process.security.load()?;
    block_on(async {
        let metrics = bind_metrics(a.metrics_listen.as_deref()).await?;
        let summary = actor::run_actor(
            &a.coordinator,
            &a.name,
            security,
            metrics,
            shutdown_signal(a.process.exit_with_parent),
        )
        .await?;
        // One machine-readable line for `oxrl run` and the benchmarks.
        println!(
            "{}",
            serde_json::json!({
                "actor": a.name, "leases": summary.leases, "groups_accepted": summary.groups_accepted,
                "groups_rejected": summary.groups_rejected, "groups_dropped": summary.groups_dropped,
                "in_flight_swaps": summary.in_flight_swaps,
                "idle_s": summary.idle_s, "busy_s": summary.busy_s,
            })
        );
        Ok(())
    })
}
