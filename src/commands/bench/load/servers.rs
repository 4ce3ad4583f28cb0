//! The real servers of `oxrl bench load`: `oxrl coordinator` and `oxrl learner` as child
//! processes of this binary on loopback (so each one's memory can be read on its own from
//! `/proc/<pid>/status`), and what the learner wrote about the groups it trained.

use crate::commands::roles::LISTENING;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// A role started as a child process; it stops when its stdin closes.
pub(super) struct Server {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    /// The address it printed on `OXRL_LISTENING`.
    pub addr: String,
    pub log: PathBuf,
}

impl Server {
    /// Starts `oxrl <args> --exit-with-parent` and waits for its listening address.
    pub async fn start(name: &str, args: &[String], log: PathBuf) -> anyhow::Result<Server> {
        let exe = std::env::current_exe().context("locating the oxrl binary")?;
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(exe)
            .args(args)
            .arg("--exit-with-parent")
            .env("RUST_LOG", "warn")
            // Plain connections on loopback, whatever this shell has set.
            .env_remove(proto::transport::TOKEN_ENV)
            .env_remove(proto::transport::TLS_CERT_ENV)
            .env_remove(proto::transport::TLS_KEY_ENV)
            .env_remove(proto::transport::TLS_CA_ENV)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the {name}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("piped stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix(LISTENING) {
                    return Ok::<_, std::io::Error>(Some(addr.trim().to_string()));
                }
            }
            Ok(None)
        })
        .await;
        let Ok(Ok(Some(addr))) = found else {
            bail!("the {name} did not start; see {}", log.display());
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server {
            name: name.to_string(),
            child,
            stdin,
            addr,
            log,
        })
    }

    /// Its resident set size in MiB, from `/proc/<pid>/status` (None where there is none).
    pub fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    /// Closes its stdin (a clean stop) and waits up to `grace`; kills it after that.
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        drop(self.stdin.take());
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
}

/// Groups the learner has accounted for so far, from its `metrics.jsonl`: received into a
/// step (`prompts`, zero-variance ones included) or dropped as stale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Trained {
    pub steps: u64,
    pub groups: u64,
    pub dropped_stale: u64,
    pub zero_variance: u64,
}

impl Trained {
    /// Every group the learner took off its queue.
    pub fn accounted(&self) -> u64 {
        self.groups + self.dropped_stale
    }
}

/// Reads `metrics.jsonl` (absent before the first step).
pub(super) fn trained(metrics: &Path) -> anyhow::Result<Trained> {
    let Ok(text) = std::fs::read_to_string(metrics) else {
        return Ok(Trained::default());
    };
    let mut t = Trained::default();
    // A line is written whole, but the last one may still be in flight.
    for line in text.lines().filter(|l| l.ends_with('}')) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("parsing {}", metrics.display()))?;
        t.steps += 1;
        t.groups += v["prompts"].as_u64().unwrap_or(0);
        t.dropped_stale += v["dropped_stale"].as_u64().unwrap_or(0);
        t.zero_variance += v["zero_variance_groups"].as_u64().unwrap_or(0);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_lines_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        assert_eq!(trained(&path).unwrap(), Trained::default());
        std::fs::write(
            &path,
            "{\"prompts\":8,\"dropped_stale\":1,\"zero_variance_groups\":2}\n\
             {\"prompts\":8,\"dropped_stale\":0,\"zero_variance_groups\":0}\n{\"prom",
        )
        .unwrap();
        let t = trained(&path).unwrap();
        assert_eq!(
            (t.steps, t.groups, t.dropped_stale, t.zero_variance),
            (2, 16, 1, 2)
        );
        assert_eq!(t.accounted(), 17);
    }
}
