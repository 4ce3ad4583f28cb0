//! `oxrl run` without `--sync`: the coordinator, the learner and M actors as separate
//! processes of this binary on loopback ports the OS picks. Children exit when their stdin
//! closes, so none outlives this process, Ctrl-C included. The coordinator also serves its
//! metrics and live dashboard on a loopback port; its URL is printed at start.

use super::roles::{LISTENING, METRICS};
use crate::progress;
use anyhow::{bail, Context};
use learner::RunConfig;
use proto::transport::{AuthToken, TOKEN_ENV};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A started child process.
struct Role {
    name: String,
    child: Child,
    /// Held here, not in `child`: `Child::wait` closes the stdin it holds, which the child
    /// would take for its parent's death.
    stdin: Option<tokio::process::ChildStdin>,
}

/// Starts `oxrl <args>` with stdin held open, stdout piped, stderr to `log`, and `token` as
/// the run's bearer token (in the environment, not on the command line).
fn spawn(name: &str, args: &[String], log: &Path, token: &AuthToken) -> anyhow::Result<Role> {
    let exe = std::env::current_exe().context("locating the oxrl binary")?;
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(exe)
        .args(args)
        .arg("--exit-with-parent")
        .env(TOKEN_ENV, token.expose())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let mut child = child;
    let stdin = child.stdin.take();
    Ok(Role {
        name: name.into(),
        child,
        stdin,
    })
}

/// Waits for the child's `OXRL_LISTENING <addr>` line.
async fn listening(role: &mut Role, log: &Path) -> anyhow::Result<String> {
    Ok(listening_with_metrics(role, log).await?.0)
}

/// Waits for the child's `OXRL_LISTENING <addr>` line; also returns the address of the
/// `OXRL_METRICS <addr>` line a role prints before it when it serves metrics.
async fn listening_with_metrics(
    role: &mut Role,
    log: &Path,
) -> anyhow::Result<(String, Option<String>)> {
    let stdout = role.child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut metrics = None;
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = line.strip_prefix(LISTENING) {
                return Ok::<_, std::io::Error>(Some(addr.trim().to_string()));
            }
            if let Some(addr) = line.strip_prefix(METRICS) {
                metrics = Some(addr.trim().to_string());
            }
        }
        Ok(None)
    })
    .await;
    match found {
        Ok(Ok(Some(addr))) => {
            // Keep draining stdout so the child never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            Ok((addr, metrics))
        }
        _ => bail!("{} did not start; see {}", role.name, log.display()),
    }
}

/// Closes every child's stdin (they shut down), waits up to `grace`, then kills the rest.
async fn stop_all(roles: &mut [Role], grace: Duration) {
    for r in roles.iter_mut() {
        drop(r.stdin.take());
    }
    for r in roles.iter_mut() {
        if tokio::time::timeout(grace, r.child.wait()).await.is_err() {
            tracing::warn!(role = %r.name, "did not stop in time; killing it");
            let _ = r.child.kill().await;
        }
    }
}

/// Runs the pipeline in `dir` with `cfg` (already saved as `dir/config.toml`).
pub fn run_pipeline(cfg: &RunConfig, dir: &Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(pipeline(cfg, dir))
}

async fn pipeline(cfg: &RunConfig, dir: &Path) -> anyhow::Result<()> {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let config = dir.join("config.toml");
    let s = |v: &str| v.to_string();
    // Even on loopback the roles authenticate: a token fresh for this run, so no other
    // process on the machine can push rollouts or take leases.
    let token = AuthToken::random().context("making the run's auth token")?;
    let mut roles = Vec::new();
    let log = logs.join("coordinator.log");
    roles.push(spawn(
        "coordinator",
        &[
            s("coordinator"),
            s("--listen"),
            s("127.0.0.1:0"),
            s("--config"),
            config.display().to_string(),
            s("--metrics-listen"),
            s("127.0.0.1:0"),
        ],
        &log,
        &token,
    )?);
    let (coordinator, dashboard) = listening_with_metrics(&mut roles[0], &log).await?;
    let coordinator = format!("http://{coordinator}");
    if let Some(addr) = dashboard {
        // On stdout, before the progress bar: the one line a person needs to watch the run.
        let url = format!("http://{addr}/");
        println!("dashboard: {url}");
        tracing::info!(%url, "coordinator dashboard");
    }
    let log = logs.join("learner.log");
    roles.push(spawn(
        "learner",
        &[
            s("learner"),
            s("--coordinator"),
            coordinator.clone(),
            s("--listen"),
            s("127.0.0.1:0"),
            s("--out"),
            dir.display().to_string(),
        ],
        &log,
        &token,
    )?);
    listening(&mut roles[1], &log).await?;
    for i in 0..cfg.pipeline.actors {
        let name = format!("actor-{i}");
        let log = logs.join(format!("{name}.log"));
        let mut role = spawn(
            &name,
            &[
                s("actor"),
                s("--coordinator"),
                coordinator.clone(),
                s("--name"),
                name.clone(),
            ],
            &log,
            &token,
        )?;
        let stdout = role.child.stdout.take().expect("piped stdout");
        let summary_path = logs.join(format!("{name}.json"));
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = std::fs::write(&summary_path, line);
            }
        });
        roles.push(role);
    }
    tracing::info!(%coordinator, actors = cfg.pipeline.actors, logs = %logs.display(), "pipeline started");

    let pb = progress::bar(cfg.steps, "rl");
    let metrics = dir.join("metrics.jsonl");
    let outcome = loop {
        tokio::select! {
            status = roles[1].child.wait() => break status.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => break Err(anyhow::anyhow!("interrupted")),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Some(line) = last_line(&metrics) {
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
    // The learner is done (or we were interrupted): actors see `stop` from the coordinator.
    let (mut coord, mut rest): (Vec<Role>, Vec<Role>) =
        roles.into_iter().partition(|r| r.name == "coordinator");
    let grace = if outcome.is_ok() {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(5)
    };
    stop_all(&mut rest, grace).await;
    stop_all(&mut coord, Duration::from_secs(5)).await;
    let status = outcome?;
    if !status.success() {
        bail!(
            "the learner failed ({status}); see {}",
            logs.join("learner.log").display()
        );
    }
    let last = last_line(&metrics).context("the run wrote no metrics")?;
    crate::commands::run::finish(
        dir,
        last["step"].as_u64().unwrap_or(0),
        last["version"].as_u64().unwrap_or(0),
        last["wall_s"].as_f64().unwrap_or(0.0),
    )
}

fn last_line(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(text.lines().rev().find(|l| !l.trim().is_empty())?).ok()
}
