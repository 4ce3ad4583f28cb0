//! `oxrl run` leaves no process behind: not on Ctrl-C, not when it is killed outright.

mod common;

use common::{read_jsonl, wait_until};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The parent pid and state letter of a process, if it exists.
fn stat(pid: u32) -> Option<(u32, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces, so parse after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Pids of the live (not zombie) children of `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&pid| matches!(stat(pid), Some((ppid, state)) if ppid == parent && state != 'Z'))
        .collect()
}

/// Whether a process is gone (or only a zombie waiting to be reaped).
fn exited(pid: u32) -> bool {
    !matches!(stat(pid), Some((_, state)) if state != 'Z')
}

fn start_run(dir: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_oxrl"))
        .args([
            "run",
            "--out",
            dir.to_str().unwrap(),
            "--steps",
            "1000",
            "--prompts-per-step",
            "8",
            "--group-size",
            "4",
            "--eval-every",
            "0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn check_no_survivors(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let run = dir
        .path()
        .join(format!("run-{}", signal.trim_start_matches('-')));
    let mut parent = start_run(&run);
    let metrics = run.join("metrics.jsonl");
    wait_until(Duration::from_secs(120), "the run's first steps", || {
        metrics.exists() && !read_jsonl(&metrics).is_empty()
    });
    let children = children_of(parent.id());
    assert_eq!(
        children.len(),
        4,
        "coordinator, learner and two actors should be running: {children:?}"
    );
    let status = Command::new("kill")
        .args([signal, &parent.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    parent.wait().unwrap();
    wait_until(
        Duration::from_secs(30),
        "every child of the stopped run to exit",
        || children.iter().all(|&pid| exited(pid)),
    );
}

#[test]
fn ctrl_c_stops_every_child() {
    check_no_survivors("-INT");
}

#[test]
fn a_killed_parent_takes_its_children_with_it() {
    check_no_survivors("-KILL");
}
