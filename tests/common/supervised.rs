//! A real `oxrl run` driven from outside, as a user (or a fault injector) would: started with
//! its output in files, its children found by the pid files it writes (`logs/<role>.pid`),
//! signalled, and its progress read from `metrics.jsonl` and `logs/restarts.jsonl`.

use super::read_jsonl;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `oxrl run --config <config> --out <run> <flags>`, stdout and stderr to files in `dir`.
pub fn start_run(dir: &Path, config: &Path, run: &Path, flags: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_oxrl"))
        .args(["run", "--config", config.to_str().unwrap(), "--out"])
        .arg(run)
        .args(flags)
        // Warnings, and the coordinator saying it replayed its journal.
        .env("RUST_LOG", "warn,coordinator::handle=info")
        // As a user runs it: an error is its message, with no backtrace.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// The pid `oxrl run` wrote for `role`, once the file exists.
pub fn pid(run: &Path, role: &str) -> Option<u32> {
    let text = std::fs::read_to_string(run.join(format!("logs/{role}.pid"))).ok()?;
    text.trim().parse().ok()
}

/// Sends `sig` (`-KILL`, `-STOP`, ...) to `pid`; false when there is no such process.
pub fn try_signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Sends `sig` to `pid`, which must exist.
pub fn signal(pid: u32, sig: &str) {
    assert!(try_signal(pid, sig), "kill {sig} {pid}");
}

/// The restarts recorded so far for `role`.
pub fn restarts_of(run: &Path, role: &str) -> usize {
    let path = run.join("logs/restarts.jsonl");
    if !path.exists() {
        return 0;
    }
    read_jsonl(&path)
        .iter()
        .filter(|l| l["role"] == role)
        .count()
}

/// The step of the last whole line of metrics.jsonl (0 before any; the learner may be
/// halfway through writing the next).
pub fn last_step(run: &Path) -> u64 {
    let Ok(text) = std::fs::read_to_string(run.join("metrics.jsonl")) else {
        return 0;
    };
    let whole = text.rsplit_once('\n').map_or("", |(done, _)| done);
    whole
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|l| l["step"].as_u64())
        .unwrap_or(0)
}

/// Waits for `child` to exit within `deadline`; its status and its stdout and stderr.
pub fn finish(
    mut child: Child,
    dir: &Path,
    deadline: Duration,
) -> (std::process::ExitStatus, String) {
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the run did not end within {deadline:?}:\n{}",
                std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = format!(
        "{}\n{}",
        std::fs::read_to_string(dir.join("stdout")).unwrap_or_default(),
        std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
    );
    (status, out)
}
