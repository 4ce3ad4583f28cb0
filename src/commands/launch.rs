//! `oxrl run` without `--sync`: the coordinator, the learner and M actors as separate
//! processes of this binary on loopback ports the OS picks (started by `crate::children`).
//! Children exit when their stdin closes, so none outlives this process, Ctrl-C included.
//! The coordinator also serves its metrics and live dashboard on a loopback port; its URL is
//! printed at start.

use crate::children::{stop_all, ChildRole, EnvVar};
use crate::progress;
use anyhow::{bail, Context};
use learner::RunConfig;
use proto::transport::{AuthToken, TOKEN_ENV};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Runs the pipeline in `dir` with `cfg` (already saved as `dir/config.toml`).
pub fn run_pipeline(cfg: &RunConfig, dir: &Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(pipeline(cfg, dir))
}

/// The run's processes: where they log, and the token they share.
struct Launcher {
    logs: PathBuf,
    token: AuthToken,
}

impl Launcher {
    /// Starts `oxrl <args>` as `name`, logging to `logs/<name>.log`, with the run's token
    /// (in the environment, not on the command line).
    fn spawn(&self, name: &str, args: &[&str]) -> anyhow::Result<ChildRole> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let log = self.logs.join(format!("{name}.log"));
        ChildRole::spawn(
            name,
            &args,
            &log,
            &[EnvVar::Set(TOKEN_ENV, self.token.expose())],
        )
    }

    /// The coordinator with its dashboard; its URL.
    async fn coordinator(&self, config: &Path) -> anyhow::Result<(ChildRole, String)> {
        let config = config.display().to_string();
        let mut role = self.spawn(
            "coordinator",
            &[
                "coordinator",
                "--listen",
                "127.0.0.1:0",
                "--config",
                &config,
                "--metrics-listen",
                "127.0.0.1:0",
            ],
        )?;
        let bound = role.listening().await?;
        if let Some(addr) = bound.metrics {
            // On stdout, before the progress bar: the one line a person needs to watch the run.
            // The port takes the run's token; the page reads it from the fragment, which the
            // browser never sends, and the log gets the URL without it.
            let url = format!("http://{addr}/");
            println!("dashboard: {url}#token={}", self.token.expose());
            tracing::info!(%url, "coordinator dashboard");
        }
        Ok((role, format!("http://{}", bound.addr)))
    }

    /// The learner, writing the run into `dir`.
    async fn learner(&self, coordinator: &str, dir: &Path) -> anyhow::Result<ChildRole> {
        let dir = dir.display().to_string();
        let mut role = self.spawn(
            "learner",
            &[
                "learner",
                "--coordinator",
                coordinator,
                "--listen",
                "127.0.0.1:0",
                "--out",
                &dir,
            ],
        )?;
        role.listening().await?;
        Ok(role)
    }

    /// Actor `i`; its one-line JSON summary goes to `logs/actor-<i>.json`.
    fn actor(&self, coordinator: &str, i: usize) -> anyhow::Result<ChildRole> {
        let name = format!("actor-{i}");
        let mut role = self.spawn(
            &name,
            &["actor", "--coordinator", coordinator, "--name", &name],
        )?;
        let stdout = role.take_stdout()?;
        let summary_path = self.logs.join(format!("{name}.json"));
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = std::fs::write(&summary_path, line);
            }
        });
        Ok(role)
    }
}

async fn pipeline(cfg: &RunConfig, dir: &Path) -> anyhow::Result<()> {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    // Even on loopback the roles authenticate: a token fresh for this run, so no other
    // process on the machine can push rollouts or take leases; or the user's own
    // (`OXRL_AUTH_TOKEN`), which a remote environment server of the run then shares.
    let token = match std::env::var(TOKEN_ENV) {
        Ok(raw) => AuthToken::parse(&raw, "env OXRL_AUTH_TOKEN")?,
        Err(_) => AuthToken::random().context("making the run's auth token")?,
    };
    let launcher = Launcher {
        logs: logs.clone(),
        token,
    };
    let (coordinator_role, coordinator) = launcher.coordinator(&dir.join("config.toml")).await?;
    let mut roles = vec![coordinator_role];
    roles.push(launcher.learner(&coordinator, dir).await?);
    for i in 0..cfg.pipeline.actors {
        roles.push(launcher.actor(&coordinator, i)?);
    }
    tracing::info!(%coordinator, actors = cfg.pipeline.actors, logs = %logs.display(), "pipeline started");

    let metrics = dir.join("metrics.jsonl");
    let outcome = watch_learner(cfg, &mut roles[1], &metrics).await;
    stop_roles(roles, outcome.is_ok()).await;
    let status = outcome?;
    if !status.success() {
        bail!(
            "the learner failed ({status}); see {}",
            logs.join("learner.log").display()
        );
    }
    let last = last_line(&metrics).context("the run wrote no metrics")?;
    crate::fit::run_curve::finish(
        dir,
        last["step"].as_u64().unwrap_or(0),
        last["version"].as_u64().unwrap_or(0),
        last["wall_s"].as_f64().unwrap_or(0.0),
    )
}

/// Shows the run's progress from `metrics` until the learner exits (its status) or Ctrl-C.
async fn watch_learner(
    cfg: &RunConfig,
    learner: &mut ChildRole,
    metrics: &Path,
) -> anyhow::Result<ExitStatus> {
    let pb = progress::bar(cfg.steps, "rl");
    let outcome = loop {
        tokio::select! {
            status = learner.wait() => break status.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => break Err(anyhow::anyhow!("interrupted")),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Some(line) = last_line(metrics) {
                    pb.set_position(line["step"].as_u64().unwrap_or(0));
                    pb.set_message(format!(
                        "v{} reward {:.3} lag_max {} dropped {}",
                        line["version"], line["reward_mean"].as_f64().unwrap_or(0.0), line["lag_max"], line["dropped_stale"]
                    ));
                }
            }
        }
    };
    pb.finish_and_clear();
    outcome
}

/// Stops the actors (and the learner, if still up) first, the coordinator last: once the
/// learner is done (or on an interrupt), actors see `stop` from the coordinator.
async fn stop_roles(roles: Vec<ChildRole>, finished: bool) {
    let (mut coord, mut rest): (Vec<ChildRole>, Vec<ChildRole>) =
        roles.into_iter().partition(|r| r.name == "coordinator");
    let grace = if finished {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(5)
    };
    stop_all(&mut rest, grace).await;
    stop_all(&mut coord, Duration::from_secs(5)).await;
}

fn last_line(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(text.lines().rev().find(|l| !l.trim().is_empty())?).ok()
}
