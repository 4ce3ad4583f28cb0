//! Roles started as child processes of this binary (`oxrl run`'s pipeline, `oxrl bench load`'s
//! servers): `oxrl <role> ... --exit-with-parent` with stdin held open (a role exits when it
//! closes, so none outlives its parent, Ctrl-C included), stdout piped for the lines a role
//! prints once bound, stderr to a log file. The integration tests start roles the same way
//! from `tests/common` (a test crate cannot reach this binary's modules).

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The line a role prints once its listener is bound.
pub const LISTENING: &str = "OXRL_LISTENING";

/// The line a role prints once its `--metrics-listen` listener is bound.
pub const METRICS: &str = "OXRL_METRICS";

/// How long a role may take to print that it listens.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A change to the environment a child inherits.
pub enum EnvVar<'a> {
    Set(&'a str, &'a str),
    Remove(&'a str),
}

/// A role started as a child process.
pub struct ChildRole {
    pub name: String,
    pub log: PathBuf,
    child: Child,
    /// Held here, not in `child`: `Child::wait` closes the stdin it holds, which the child
    /// would take for its parent's death.
    stdin: Option<ChildStdin>,
}

/// The addresses a role printed once bound.
pub struct Listening {
    /// `OXRL_LISTENING <addr>`.
    pub addr: String,
    /// `OXRL_METRICS <addr>`, printed before it by a role that serves metrics.
    pub metrics: Option<String>,
}

impl ChildRole {
    /// Starts `oxrl <args> --exit-with-parent` with `env` applied, stderr to `log` (a new
    /// file).
    pub fn spawn(
        name: &str,
        args: &[String],
        log: &Path,
        env: &[EnvVar],
    ) -> anyhow::Result<ChildRole> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        ChildRole::spawn_logging(name, args, log, log_file, env)
    }

    /// [`ChildRole::spawn`] appending to `log`: a restarted role's log keeps its previous
    /// life's lines, which say why it died.
    pub fn spawn_appending(
        name: &str,
        args: &[String],
        log: &Path,
        env: &[EnvVar],
    ) -> anyhow::Result<ChildRole> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        ChildRole::spawn_logging(name, args, log, log_file, env)
    }

    fn spawn_logging(
        name: &str,
        args: &[String],
        log: &Path,
        log_file: std::fs::File,
        env: &[EnvVar],
    ) -> anyhow::Result<ChildRole> {
        let exe = std::env::current_exe().context("locating the oxrl binary")?;
        let mut command = Command::new(exe);
        command.args(args).arg("--exit-with-parent");
        for var in env {
            match var {
                EnvVar::Set(key, value) => command.env(key, value),
                EnvVar::Remove(key) => command.env_remove(key),
            };
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the {name}"))?;
        let stdin = child.stdin.take();
        Ok(ChildRole {
            name: name.into(),
            log: log.to_path_buf(),
            child,
            stdin,
        })
    }

    /// Its stdout, for a caller that reads it itself (instead of [`ChildRole::listening`]).
    pub fn take_stdout(&mut self) -> anyhow::Result<ChildStdout> {
        self.child.stdout.take().context("piped stdout")
    }

    /// Waits for the role's `OXRL_LISTENING <addr>` line (and an `OXRL_METRICS` line before
    /// it), then keeps draining stdout so the child never blocks on a full pipe.
    pub async fn listening(&mut self) -> anyhow::Result<Listening> {
        let mut lines = BufReader::new(self.take_stdout()?).lines();
        let mut metrics = None;
        let found = tokio::time::timeout(START_TIMEOUT, async {
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
        let Ok(Ok(Some(addr))) = found else {
            bail!(
                "the {} did not start; see {}",
                self.name,
                self.log.display()
            );
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Listening { addr, metrics })
    }

    /// Its exit status if it has exited (a stopped process has not: SIGSTOP is no exit).
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Its process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Closes its stdin: a clean stop.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Closes its stdin and waits up to `grace`; kills it after that (an error).
    pub async fn stop(&mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        self.close_stdin();
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!(
                    "the {} did not stop within {grace:?}; see {}",
                    self.name,
                    self.log.display()
                )
            }
        }
    }

    /// Its resident set size in MiB, from `/proc/<pid>/status` (None where there is none).
    pub fn rss_mib(&self) -> Option<f64> {
        self.status_mib("VmRSS:")
    }

    /// Its anonymous resident memory in MiB (`RssAnon`: heap, stacks, its own allocations),
    /// the part of the RSS that a leak grows. The rest is mostly the executable's code pages,
    /// read in the first time each path runs, shared and reclaimable.
    pub fn anon_mib(&self) -> Option<f64> {
        self.status_mib("RssAnon:")
    }

    /// A `/proc/<pid>/status` field given in kB, in MiB.
    fn status_mib(&self, field: &str) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }
}

/// Closes every child's stdin at once (they shut down together), then waits for each up to
/// `grace`, killing the ones that do not stop.
pub async fn stop_all(roles: &mut [ChildRole], grace: Duration) {
    for r in roles.iter_mut() {
        r.close_stdin();
    }
    for r in roles.iter_mut() {
        if let Err(e) = r.stop(grace).await {
            tracing::warn!(role = %r.name, error = %e, "killed it");
        }
    }
}
