//! The real servers of `oxrl bench load`: `oxrl coordinator` and `oxrl learner` as child
//! processes of this binary on loopback (so each one's memory and CPU time can be read on its
//! own from `/proc/<pid>/`), and what the learner wrote about the groups it trained.

use crate::children::{ChildRole, EnvVar};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

/// A role started as a child process; it stops when its stdin closes.
pub(super) struct Server {
    role: ChildRole,
    /// The address it printed on `OXRL_LISTENING`.
    pub addr: String,
}

impl Server {
    /// Starts `oxrl <args> --exit-with-parent` and waits for its listening address.
    pub async fn start(name: &str, args: &[String], log: PathBuf) -> anyhow::Result<Server> {
        use proto::transport::{TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV, TOKEN_ENV};
        let env = [
            EnvVar::Set("RUST_LOG", "warn"),
            // Plain connections on loopback, whatever this shell has set.
            EnvVar::Remove(TOKEN_ENV),
            EnvVar::Remove(TLS_CERT_ENV),
            EnvVar::Remove(TLS_KEY_ENV),
            EnvVar::Remove(TLS_CA_ENV),
        ];
        let mut role = ChildRole::spawn(name, args, &log, &env)?;
        let addr = role.listening().await?.addr;
        Ok(Server { role, addr })
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.role.id()
    }

    /// Its resident set size in MiB, from `/proc/<pid>/status` (None where there is none).
    pub fn rss_mib(&self) -> Option<f64> {
        self.role.rss_mib()
    }

    /// Its anonymous resident memory in MiB (the RSS without the executable's code pages).
    pub fn anon_mib(&self) -> Option<f64> {
        self.role.anon_mib()
    }

    /// Closes its stdin (a clean stop) and waits up to `grace`; kills it after that.
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        self.role.stop(grace).await
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
