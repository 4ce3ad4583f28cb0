//! `oxrl env serve`: the built-in environments served over `oxrl.v1.Environment`, for runs
//! whose `[episode] url` points at a server (docs/remote-environments.md). A process like the
//! roles: the same token and TLS flags, gRPC health, `--metrics-listen`, and the
//! `OXRL_LISTENING <addr>` line once bound.

use std::time::Duration;

use anyhow::Context;
use environment::{EnvServer, Limits, DEFAULT_IDLE_TTL, DEFAULT_MAX_SESSIONS};

use super::roles::{bind, bind_metrics, block_on, shutdown_signal, ProcessArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: EnvCommand,
}

#[derive(clap::Subcommand)]
enum EnvCommand {
    /// Serve built-in environments over gRPC (oxrl.v1.Environment) to remote actors.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// A built-in environment to serve: single, calculator or guess. Repeat for several;
    /// the first is the default (what a client that names none gets).
    #[arg(long = "builtin", value_name = "NAME", required = true)]
    builtins: Vec<String>,
    /// Address to listen on (port 0: the OS picks one).
    #[arg(long, default_value = "0.0.0.0:7100")]
    listen: String,
    /// The task whose verifier `single` and `calculator` score final answers with (a
    /// `--task` spec as `oxrl run` takes: `addition:2`, `data.jsonl@exact`).
    #[arg(long, default_value = "addition:2")]
    task: String,
    /// Open sessions at most; a Reset past it is refused (RESOURCE_EXHAUSTED) until
    /// episodes end.
    #[arg(long, default_value_t = DEFAULT_MAX_SESSIONS)]
    max_sessions: usize,
    /// Forget a session no call has touched for this many seconds (its client is gone).
    #[arg(long, default_value_t = DEFAULT_IDLE_TTL.as_secs_f64())]
    session_ttl_s: f64,
    /// Serve Prometheus `GET /metrics` (HTTP) on this address, e.g. 0.0.0.0:9003.
    #[arg(long)]
    metrics_listen: Option<String>,
    #[command(flatten)]
    process: ProcessArgs,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.command {
        EnvCommand::Serve(a) => serve(a),
    }
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    if !(a.session_ttl_s.is_finite() && a.session_ttl_s > 0.0) {
        anyhow::bail!(
            "--session-ttl-s {} must be a positive number of seconds",
            a.session_ttl_s
        );
    }
    let limits = Limits {
        max_sessions: a.max_sessions,
        idle_ttl: Duration::from_secs_f64(a.session_ttl_s),
    };
    let verifier = tasks::from_spec(&a.task, 0, &tasks::VerifierRegistry::new())
        .with_context(|| format!("reading --task {}", a.task))?
        .verifier();
    let server = EnvServer::builtins(&a.builtins, verifier, limits)
        .context("setting up the environment server")?;
    let security = a.process.security.load()?;
    block_on(async {
        let metrics = bind_metrics(a.metrics_listen.as_deref()).await?;
        let _metrics = metrics
            .map(|listener| server.serve_metrics(listener, &security))
            .transpose()?;
        let (listener, _) = bind(&a.listen).await?;
        server
            .serve(
                listener,
                security,
                shutdown_signal(a.process.exit_with_parent),
            )
            .await
            .context("serving environments")?;
        Ok(())
    })
}
