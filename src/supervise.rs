//! What `oxrl run` does when one of its children dies, as Kubernetes would in a cluster: the
//! restart budget and backoff of one role (`[pipeline] max_restarts` within
//! `restart_window_s`, delays doubling from `restart_backoff_ms` to `restart_backoff_max_ms`),
//! how an exit reads to a person, and the run's record of its restarts
//! (`logs/restarts.jsonl`, one line per restart, and `restarts.json`, the counts by role).
//! The process plumbing is in `crate::commands::watch`.

use anyhow::Context;
use learner::PipelineConfig;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// Lines of a role's log that an exhausted budget's error quotes.
pub const LOG_TAIL_LINES: usize = 20;

/// How many restarts a role gets and how long each waits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartPolicy {
    pub max_restarts: u32,
    pub window: Duration,
    pub backoff: Duration,
    pub backoff_max: Duration,
}

impl RestartPolicy {
    /// The policy of a validated `[pipeline]` table.
    pub fn of(pipeline: &PipelineConfig) -> Self {
        RestartPolicy {
            max_restarts: pipeline.max_restarts,
            window: pipeline.restart_window(),
            backoff: Duration::from_millis(pipeline.restart_backoff_ms),
            backoff_max: Duration::from_millis(pipeline.restart_backoff_max_ms),
        }
    }
}

/// One role's restarts: when the recent ones happened, and how many in all.
#[derive(Debug, Default)]
pub struct RestartBudget {
    recent: VecDeque<Instant>,
    total: u32,
}

impl RestartBudget {
    /// After a crash at `now`: the delay before the role's next start, or None when it has
    /// had `max_restarts` restarts within the window already. The delay doubles with each
    /// restart still inside the window, so a role that ran well for a window starts afresh.
    pub fn admit(&mut self, policy: &RestartPolicy, now: Instant) -> Option<Duration> {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= policy.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= policy.max_restarts as usize {
            return None;
        }
        let doublings = self.recent.len().min(31) as u32;
        let delay = policy
            .backoff
            .saturating_mul(1 << doublings)
            .min(policy.backoff_max);
        self.recent.push_back(now);
        self.total += 1;
        Some(delay)
    }

    /// Restarts granted so far.
    pub fn total(&self) -> u32 {
        self.total
    }
}

/// How a child ended, for a person and for `restarts.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Death {
    /// "exited with code 1", "was killed by signal 9 (SIGKILL)", or why it did not start.
    pub cause: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

impl Death {
    /// An exit status as a person reads it.
    pub fn of(status: ExitStatus) -> Death {
        use std::os::unix::process::ExitStatusExt;
        let (code, signal) = (status.code(), status.signal());
        let cause = match (code, signal) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(sig)) => match signal_name(sig) {
                Some(name) => format!("was killed by signal {sig} ({name})"),
                None => format!("was killed by signal {sig}"),
            },
            (None, None) => format!("ended ({status})"),
        };
        Death {
            cause,
            code,
            signal,
        }
    }

    /// A restart that failed before the role was up (its listener never bound).
    pub fn failed_start(error: &anyhow::Error) -> Death {
        Death {
            cause: format!("failed to start again ({error:#})"),
            code: None,
            signal: None,
        }
    }
}

fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// The last `n` lines of a log file, indented, for an error message.
pub fn log_tail(path: &Path, n: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return format!("  ({} could not be read)", path.display());
    };
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(n)..];
    if tail.is_empty() {
        return "  (the log is empty)".into();
    }
    tail.iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One restart, as a line of `logs/restarts.jsonl`.
#[derive(Debug, Serialize)]
pub struct RestartEntry<'a> {
    /// Unix milliseconds of the crash.
    pub t: u128,
    pub role: &'a str,
    /// This role's restarts so far, this one included.
    pub restart: u32,
    #[serde(flatten)]
    pub death: &'a Death,
    pub delay_ms: u128,
    pub log: &'a Path,
}

/// The run's restarts: appended to `logs/restarts.jsonl` as they happen, counted by role.
pub struct RestartLog {
    path: PathBuf,
    by_role: BTreeMap<String, u32>,
}

impl RestartLog {
    /// A record in `logs`, counting no role yet.
    pub fn new(logs: &Path) -> Self {
        RestartLog {
            path: logs.join("restarts.jsonl"),
            by_role: BTreeMap::new(),
        }
    }

    /// Counts `role`'s restarts from zero, so the summary names it even if it never crashes.
    pub fn track(&mut self, role: &str) {
        self.by_role.entry(role.to_string()).or_default();
    }

    /// Appends `entry` and counts it.
    pub fn record(&mut self, entry: &RestartEntry) -> anyhow::Result<()> {
        *self.by_role.entry(entry.role.to_string()).or_default() += 1;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        writeln!(file, "{}", serde_json::to_string(entry)?)
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// Restarts in all.
    pub fn total(&self) -> u32 {
        self.by_role.values().sum()
    }

    /// One line for the terminal: "restarts: coordinator 1, learner 2 (see ...)".
    pub fn summary(&self) -> String {
        if self.total() == 0 {
            return "restarts: none".into();
        }
        let counts: Vec<String> = self
            .by_role
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(role, n)| format!("{role} {n}"))
            .collect();
        format!(
            "restarts: {} (see {})",
            counts.join(", "),
            self.path.display()
        )
    }

    /// Writes `dir/restarts.json`: `{"total": N, "by_role": {"learner": 1, ...}}`.
    pub fn write_summary(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join("restarts.json");
        let json = serde_json::json!({ "total": self.total(), "by_role": self.by_role });
        std::fs::write(&path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Unix milliseconds now.
pub fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_restarts: u32) -> RestartPolicy {
        RestartPolicy {
            max_restarts,
            window: Duration::from_secs(60),
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5),
        }
    }

    #[test]
    fn delays_double_to_the_cap_and_the_budget_runs_out() {
        let p = policy(5);
        let mut budget = RestartBudget::default();
        let t0 = Instant::now();
        let delays: Vec<Option<u64>> = (0..6)
            .map(|i| {
                budget
                    .admit(&p, t0 + Duration::from_secs(i))
                    .map(|d| d.as_secs())
            })
            .collect();
        assert_eq!(
            delays,
            vec![Some(1), Some(2), Some(4), Some(5), Some(5), None]
        );
        assert_eq!(budget.total(), 5);
    }

    #[test]
    fn restarts_older_than_the_window_no_longer_count() {
        let p = policy(2);
        let mut budget = RestartBudget::default();
        let t0 = Instant::now();
        assert!(budget.admit(&p, t0).is_some());
        assert!(budget.admit(&p, t0 + Duration::from_secs(1)).is_some());
        assert_eq!(budget.admit(&p, t0 + Duration::from_secs(2)), None);
        // A minute after the first restart, it has left the window: one more is allowed, and
        // its delay doubles once (one recent restart).
        let later = budget.admit(&p, t0 + Duration::from_secs(60));
        assert_eq!(later, Some(Duration::from_secs(2)));
        assert_eq!(budget.total(), 3);
    }

    #[test]
    fn no_restarts_means_the_first_crash_is_final() {
        let mut budget = RestartBudget::default();
        assert_eq!(budget.admit(&policy(0), Instant::now()), None);
    }

    #[test]
    fn exits_read_as_a_person_would_say_them() {
        use std::os::unix::process::ExitStatusExt;
        let killed = Death::of(ExitStatus::from_raw(9));
        assert_eq!(killed.cause, "was killed by signal 9 (SIGKILL)");
        assert_eq!((killed.code, killed.signal), (None, Some(9)));
        let failed = Death::of(ExitStatus::from_raw(1 << 8));
        assert_eq!(failed.cause, "exited with code 1");
        assert_eq!(failed.code, Some(1));
    }

    #[test]
    fn a_log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("learner.log");
        let text: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
        std::fs::write(&log, text.join("\n")).unwrap();
        let tail = log_tail(&log, 3);
        assert_eq!(tail, "  line 27\n  line 28\n  line 29");
        assert!(log_tail(&dir.path().join("missing.log"), 3).contains("could not be read"));
    }

    #[test]
    fn the_record_counts_restarts_by_role() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RestartLog::new(dir.path());
        log.track("coordinator");
        log.track("learner");
        assert_eq!(log.summary(), "restarts: none");
        let death = Death {
            cause: "was killed by signal 9 (SIGKILL)".into(),
            code: None,
            signal: Some(9),
        };
        for role in ["learner", "learner", "actor-0"] {
            log.record(&RestartEntry {
                t: unix_ms(),
                role,
                restart: 1,
                death: &death,
                delay_ms: 1000,
                log: Path::new("logs/x.log"),
            })
            .unwrap();
        }
        assert!(log
            .summary()
            .starts_with("restarts: actor-0 1, learner 2 (see "));
        log.write_summary(dir.path()).unwrap();
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("restarts.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(summary["total"], 3);
        assert_eq!(summary["by_role"]["coordinator"], 0);
        assert_eq!(summary["by_role"]["learner"], 2);
        let lines = std::fs::read_to_string(dir.path().join("restarts.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
        assert_eq!(first["signal"], 9);
        assert_eq!(first["role"], "learner");
        assert!(first.get("code").is_none());
    }
}
