//! `oxrl run` without `--sync`: the coordinator, the learner and M actors as separate
//! processes of this binary on loopback ports the OS picks (started by `crate::children`),
//! restarted when they crash (`crate::commands::watch`). Children exit when their stdin
//! closes, so none outlives this process, Ctrl-C included. The coordinator keeps its journal
//! in `<run dir>/coordinator.journal`, so a restarted one carries on the run; it also serves
//! its metrics and live dashboard on a loopback port, whose URL is printed at start. Each
//! child's pid is in `logs/<role>.pid` (rewritten on every restart).

use crate::children::{stop_all, ChildRole, EnvVar};
use crate::commands::watch::{Role, Supervisor};
use crate::supervise::RestartLog;
use anyhow::Context;
use learner::RunConfig;
use proto::transport::{AuthToken, TOKEN_ENV};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Tries at binding a restarted coordinator's old addresses (held a moment by another
/// process, say), the first after `BIND_RETRY`, each wait doubling.
const BIND_TRIES: u32 = 5;
const BIND_RETRY: Duration = Duration::from_millis(200);

/// Runs the pipeline in `dir` with `cfg` (already saved as `dir/config.toml`); `resume`
/// carries on the coordinator's journal of an earlier run in `dir`.
pub fn run_pipeline(cfg: &RunConfig, dir: &Path, resume: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(pipeline(cfg, dir, resume))
}

/// The coordinator's addresses once it first bound: a restarted one binds them again, since
/// the learner and actors were given its URL.
struct CoordinatorAddrs {
    addr: String,
    metrics: Option<String>,
}

/// Starts the run's processes: where they log, the token they share, and where the
/// coordinator listens.
pub struct Launcher {
    dir: PathBuf,
    logs: PathBuf,
    token: AuthToken,
    coordinator: Option<CoordinatorAddrs>,
}

impl Launcher {
    /// The log of `role`.
    pub fn log(&self, role: &Role) -> PathBuf {
        self.logs.join(format!("{}.log", role.name()))
    }

    /// The coordinator's journal, kept by every `oxrl run`.
    fn journal(&self) -> PathBuf {
        self.dir.join("coordinator.journal")
    }

    fn coordinator_url(&self) -> anyhow::Result<String> {
        let addrs = self
            .coordinator
            .as_ref()
            .context("the coordinator has not started")?;
        Ok(format!("http://{}", addrs.addr))
    }

    /// Starts `role` (`restart`: again, appending to its log) and writes `logs/<role>.pid`.
    pub async fn start(&mut self, role: &Role, restart: bool) -> anyhow::Result<ChildRole> {
        let child = match role {
            Role::Coordinator if restart => self.restart_coordinator().await?,
            Role::Coordinator => self.coordinator().await?,
            Role::Learner => self.learner(restart).await?,
            Role::Actor(i) => self.actor(*i, restart)?,
        };
        let pid = child.id().map(|p| p.to_string()).unwrap_or_default();
        let path = self.logs.join(format!("{}.pid", role.name()));
        // Through a rename, so a reader never sees half a pid.
        let tmp = path.with_extension("pid.tmp");
        std::fs::write(&tmp, format!("{pid}\n"))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(child)
    }

    /// Starts `oxrl <args>` as `role`, logging to `logs/<role>.log` (appended to on a
    /// restart), with the run's token (in the environment, not on the command line).
    fn spawn(&self, role: &Role, args: &[&str], restart: bool) -> anyhow::Result<ChildRole> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env = [EnvVar::Set(TOKEN_ENV, self.token.expose())];
        let (name, log) = (role.name(), self.log(role));
        if restart {
            ChildRole::spawn_appending(&name, &args, &log, &env)
        } else {
            ChildRole::spawn(&name, &args, &log, &env)
        }
    }

    /// Spawns the coordinator on `listen` and `metrics` (with the run's config and journal)
    /// and waits for it to listen.
    async fn spawn_coordinator(
        &self,
        listen: &str,
        metrics: &str,
        restart: bool,
    ) -> anyhow::Result<(ChildRole, CoordinatorAddrs)> {
        let config = self.dir.join("config.toml").display().to_string();
        let journal = self.journal().display().to_string();
        let args = [
            "coordinator",
            "--listen",
            listen,
            "--config",
            &config,
            "--journal",
            &journal,
            "--metrics-listen",
            metrics,
        ];
        let mut role = self.spawn(&Role::Coordinator, &args, restart)?;
        let bound = role.listening().await?;
        let addrs = CoordinatorAddrs {
            addr: bound.addr,
            metrics: bound.metrics,
        };
        Ok((role, addrs))
    }

    /// The coordinator with its dashboard, on ports the OS picks.
    async fn coordinator(&mut self) -> anyhow::Result<ChildRole> {
        let (role, addrs) = self
            .spawn_coordinator("127.0.0.1:0", "127.0.0.1:0", false)
            .await?;
        if let Some(addr) = &addrs.metrics {
            // On stdout, before the progress bar: the one line a person needs to watch the run.
            // The port takes the run's token; the page reads it from the fragment, which the
            // browser never sends, and the log gets the URL without it.
            let url = format!("http://{addr}/");
            println!("dashboard: {url}#token={}", self.token.expose());
            tracing::info!(%url, "coordinator dashboard");
        }
        self.coordinator = Some(addrs);
        Ok(role)
    }

    /// The coordinator again, on the addresses it had (replaying its journal). A port can be
    /// held a moment by another process: binding is tried a few times, with backoff.
    async fn restart_coordinator(&mut self) -> anyhow::Result<ChildRole> {
        let addrs = self
            .coordinator
            .as_ref()
            .context("the coordinator never started")?;
        let (listen, metrics) = (
            addrs.addr.clone(),
            addrs.metrics.clone().unwrap_or("127.0.0.1:0".into()),
        );
        let (mut attempt, mut wait) = (1, BIND_RETRY);
        loop {
            match self.spawn_coordinator(&listen, &metrics, true).await {
                Ok((role, _)) => return Ok(role),
                Err(e) if attempt < BIND_TRIES => {
                    tracing::info!(attempt, error = %e, "the coordinator did not start again; retrying");
                    tokio::time::sleep(wait).await;
                    (attempt, wait) = (attempt + 1, wait * 2);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The learner, writing the run into `dir` (and resuming from its checkpoints there).
    async fn learner(&self, restart: bool) -> anyhow::Result<ChildRole> {
        let (coordinator, dir) = (self.coordinator_url()?, self.dir.display().to_string());
        let args = [
            "learner",
            "--coordinator",
            &coordinator,
            "--listen",
            "127.0.0.1:0",
            "--out",
            &dir,
        ];
        let mut role = self.spawn(&Role::Learner, &args, restart)?;
        role.listening().await?;
        Ok(role)
    }

    /// Actor `i`, named `actor-<i>` in every life; its one-line JSON summary goes to
    /// `logs/actor-<i>.json`.
    fn actor(&self, i: usize, restart: bool) -> anyhow::Result<ChildRole> {
        let (role, coordinator) = (Role::Actor(i), self.coordinator_url()?);
        let name = role.name();
        let args = ["actor", "--coordinator", &coordinator, "--name", &name];
        let mut child = self.spawn(&role, &args, restart)?;
        let stdout = child.take_stdout()?;
        let summary_path = self.logs.join(format!("{name}.json"));
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = std::fs::write(&summary_path, line);
            }
        });
        Ok(child)
    }
}

async fn pipeline(cfg: &RunConfig, dir: &Path, resume: bool) -> anyhow::Result<()> {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    // Even on loopback the roles authenticate: a token fresh for this run, so no other
    // process on the machine can push rollouts or take leases; or the user's own
    // (`OXRL_AUTH_TOKEN`), which a remote environment server of the run then shares.
    let token = match std::env::var(TOKEN_ENV) {
        Ok(raw) => AuthToken::parse(&raw, "env OXRL_AUTH_TOKEN")?,
        Err(_) => AuthToken::random().context("making the run's auth token")?,
    };
    let mut launcher = Launcher {
        dir: dir.to_path_buf(),
        logs: logs.clone(),
        token,
        coordinator: None,
    };
    if !resume {
        // A journal (and its snapshot) left by a run that never reached a checkpoint belongs
        // to no run now.
        let journal = launcher.journal();
        let mut snapshot = journal.clone().into_os_string();
        snapshot.push(".snapshot");
        for path in [journal, PathBuf::from(snapshot)] {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e)
                        .with_context(|| format!("removing {} of an earlier run", path.display()));
                }
                _ => {}
            }
        }
    }
    let mut roles = vec![Role::Coordinator, Role::Learner];
    roles.extend((0..cfg.pipeline.actors).map(Role::Actor));
    let mut supervisor = Supervisor::new(cfg, dir);
    for role in roles {
        let child = match launcher.start(&role, false).await {
            Ok(child) => child,
            Err(e) => {
                stop_roles(supervisor.finish().0, false).await;
                return Err(e);
            }
        };
        supervisor.add(role, child);
    }
    let coordinator = launcher.coordinator_url()?;
    tracing::info!(%coordinator, actors = cfg.pipeline.actors, logs = %logs.display(), "pipeline started");

    let outcome = supervisor.watch(&mut launcher).await;
    let (children, restarts) = supervisor.finish();
    stop_roles(children, outcome.is_ok()).await;
    report_restarts(&restarts, dir);
    outcome?;
    let metrics = dir.join("metrics.jsonl");
    let last = crate::commands::watch::last_line(&metrics).context("the run wrote no metrics")?;
    crate::fit::run_curve::finish(
        dir,
        last["step"].as_u64().unwrap_or(0),
        last["version"].as_u64().unwrap_or(0),
        last["wall_s"].as_f64().unwrap_or(0.0),
    )
}

/// The final summary of restarts: a line on stdout and `restarts.json` in the run directory.
fn report_restarts(restarts: &RestartLog, dir: &Path) {
    println!("{}", restarts.summary());
    if let Err(e) = restarts.write_summary(dir) {
        tracing::warn!(error = %e, "could not write the restart summary");
    }
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
