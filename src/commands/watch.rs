//! `oxrl run`'s supervisor: watches the pipeline's children, shows the run's progress, and
//! restarts a role that crashed (the coordinator from its journal, the learner from its latest
//! checkpoint, an actor under its name) within its budget (`crate::supervise`). The learner
//! exiting 0 ends the run; an actor exiting 0 (its pool exhausted) is done, not restarted; the
//! coordinator never ends on its own, so any exit of it is a crash. A stopped (SIGSTOPped)
//! child is not a crash: hangs are the peers' timeouts' business. Ctrl-C stops everything.

use crate::children::ChildRole;
use crate::commands::launch::Launcher;
use crate::progress;
use crate::supervise::{
    log_tail, unix_ms, Death, RestartBudget, RestartEntry, RestartLog, RestartPolicy,
    LOG_TAIL_LINES,
};
use anyhow::Context;
use indicatif::ProgressBar;
use learner::RunConfig;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// How often the children are polled for an exit (the latency of noticing a crash).
const POLL: Duration = Duration::from_millis(100);

/// How often the progress bar rereads the metrics.
const PROGRESS: Duration = Duration::from_millis(500);

/// One of the pipeline's processes.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    Coordinator,
    Learner,
    /// Actor `i`, named `actor-<i>`.
    Actor(usize),
}

impl Role {
    /// Its name in logs, pid files and the restart record.
    pub fn name(&self) -> String {
        match self {
            Role::Coordinator => "coordinator".into(),
            Role::Learner => "learner".into(),
            Role::Actor(i) => format!("actor-{i}"),
        }
    }
}

/// What an exit of a role means.
enum Verdict {
    /// The learner finished: the run is over.
    RunDone,
    /// An actor finished (its pool exhausted, or told to stop): not restarted.
    Done,
    Crashed,
}

fn verdict(role: &Role, status: ExitStatus) -> Verdict {
    match role {
        Role::Learner if status.success() => Verdict::RunDone,
        Role::Actor(_) if status.success() => Verdict::Done,
        _ => Verdict::Crashed,
    }
}

/// A role and its current process.
struct Slot {
    role: Role,
    /// None while it waits to be restarted, or once it is done.
    child: Option<ChildRole>,
    /// When it is due to start again after a crash.
    restart_at: Option<Instant>,
    budget: RestartBudget,
}

/// The pipeline's children, restarted when they crash.
pub struct Supervisor {
    slots: Vec<Slot>,
    policy: RestartPolicy,
    restarts: RestartLog,
    metrics: PathBuf,
    steps: u64,
}

impl Supervisor {
    /// A supervisor of no child yet, for the run in `dir`.
    pub fn new(cfg: &RunConfig, dir: &Path) -> Self {
        Supervisor {
            slots: Vec::new(),
            policy: RestartPolicy::of(&cfg.pipeline),
            restarts: RestartLog::new(&dir.join("logs")),
            metrics: dir.join("metrics.jsonl"),
            steps: cfg.steps,
        }
    }

    /// Supervises `child`, the first life of `role`.
    pub fn add(&mut self, role: Role, child: ChildRole) {
        self.restarts.track(&role.name());
        self.slots.push(Slot {
            role,
            child: Some(child),
            restart_at: None,
            budget: RestartBudget::default(),
        });
    }

    /// The children still running and the record of restarts, once the watch is over.
    pub fn finish(self) -> (Vec<ChildRole>, RestartLog) {
        let children = self.slots.into_iter().filter_map(|s| s.child).collect();
        (children, self.restarts)
    }

    /// Shows the run's progress and restarts crashed roles until the learner finishes (Ok),
    /// Ctrl-C, or a role that crashed past its budget (an error quoting its log).
    pub async fn watch(&mut self, launcher: &mut Launcher) -> anyhow::Result<()> {
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("listening for Ctrl-C")?;
        let pb = progress::bar(self.steps, "rl");
        let mut shown = Instant::now() - PROGRESS;
        let outcome = loop {
            // Ctrl-C also cuts short a restart waiting for its role to listen.
            let polled = tokio::select! {
                _ = interrupt.recv() => break Err(anyhow::anyhow!("interrupted")),
                polled = async {
                    tokio::time::sleep(POLL).await;
                    self.poll(launcher, &pb).await
                } => polled,
            };
            match polled {
                Ok(true) => break Ok(()),
                Ok(false) => {}
                Err(e) => break Err(e),
            }
            if shown.elapsed() >= PROGRESS {
                show_progress(&pb, &self.metrics);
                shown = Instant::now();
            }
        };
        pb.finish_and_clear();
        outcome
    }

    /// One look at every child: an exit is judged, a due restart made. True once the
    /// learner has finished.
    async fn poll(&mut self, launcher: &mut Launcher, pb: &ProgressBar) -> anyhow::Result<bool> {
        for i in 0..self.slots.len() {
            let exited = match self.slots[i].child.as_mut() {
                Some(child) => child.try_wait().context("waiting on a child")?,
                None => None,
            };
            if let Some(status) = exited {
                let slot = &mut self.slots[i];
                slot.child = None;
                match verdict(&slot.role, status) {
                    Verdict::RunDone => return Ok(true),
                    Verdict::Done => tracing::info!(role = %slot.role.name(), "finished"),
                    Verdict::Crashed => self.crashed(i, Death::of(status), launcher, pb)?,
                }
            }
            if self.slots[i]
                .restart_at
                .is_some_and(|at| at <= Instant::now())
            {
                self.restart(i, launcher, pb).await?;
            }
        }
        Ok(false)
    }

    /// Schedules slot `i`'s restart after `death`, with one line on the terminal and in the
    /// log, or ends the run when its budget is spent.
    fn crashed(
        &mut self,
        i: usize,
        death: Death,
        launcher: &Launcher,
        pb: &ProgressBar,
    ) -> anyhow::Result<()> {
        let slot = &mut self.slots[i];
        let (name, log) = (slot.role.name(), launcher.log(&slot.role));
        if death.code.is_some() && last_line(&self.metrics).is_none() {
            // An error before the first step is a setup error (a model that does not load, a
            // bad path): another start would only fail the same way. A killed role is
            // restarted whenever it dies.
            return Err(ended_run(
                &name,
                &death,
                "before the run's first step; the run stops",
                &log,
            ));
        }
        let Some(delay) = slot.budget.admit(&self.policy, Instant::now()) else {
            let spent = format!(
                "and has used its restarts ({} within {} s: [pipeline] max_restarts, \
                 restart_window_s); the run stops",
                self.policy.max_restarts,
                self.policy.window.as_secs_f64()
            );
            return Err(ended_run(&name, &death, &spent, &log));
        };
        slot.restart_at = Some(Instant::now() + delay);
        let restart = slot.budget.total();
        let recorded = self.restarts.record(&RestartEntry {
            t: unix_ms(),
            role: &name,
            restart,
            death: &death,
            delay_ms: delay.as_millis(),
            log: &log,
        });
        if let Err(e) = recorded {
            // The record is for people and tools; the run goes on without it.
            tracing::warn!(error = %e, "could not record a restart");
        }
        pb.suspend(|| {
            tracing::warn!(
                role = %name,
                cause = %death.cause,
                restart,
                max_restarts = self.policy.max_restarts,
                delay_ms = delay.as_millis() as u64,
                log = %log.display(),
                "a role crashed; restarting it"
            )
        });
        Ok(())
    }

    /// Starts slot `i` again; a start that fails is one more crash.
    async fn restart(
        &mut self,
        i: usize,
        launcher: &mut Launcher,
        pb: &ProgressBar,
    ) -> anyhow::Result<()> {
        let slot = &mut self.slots[i];
        slot.restart_at = None;
        let role = slot.role.clone();
        append_marker(&launcher.log(&role), slot.budget.total());
        match launcher.start(&role, true).await {
            Ok(child) => {
                tracing::debug!(role = %role.name(), pid = child.id(), "restarted");
                self.slots[i].child = Some(child);
                Ok(())
            }
            Err(e) => self.crashed(i, Death::failed_start(&e), launcher, pb),
        }
    }
}

/// A line in a role's log where its next life begins.
fn append_marker(log: &Path, restart: u32) {
    use std::io::Write;
    let opened = std::fs::OpenOptions::new().append(true).open(log);
    if let Ok(mut file) = opened {
        let _ = writeln!(file, "----- oxrl run: restart {restart} -----");
    }
}

/// The error that ends a run when `name` died (`death`, `why` it is not restarted): what
/// happened and the end of the role's log, where its own error is.
fn ended_run(name: &str, death: &Death, why: &str, log: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "the {name} {} {why}. The last lines of {}:\n{}",
        death.cause,
        log.display(),
        log_tail(log, LOG_TAIL_LINES)
    )
}

/// Sets the bar from the last line of `metrics`.
fn show_progress(pb: &ProgressBar, metrics: &Path) {
    if let Some(line) = last_line(metrics) {
        pb.set_position(line["step"].as_u64().unwrap_or(0));
        pb.set_message(format!(
            "v{} reward {:.3} lag_max {} dropped {}",
            line["version"],
            line["reward_mean"].as_f64().unwrap_or(0.0),
            line["lag_max"],
            line["dropped_stale"]
        ));
    }
}

/// The last line of a JSONL file, parsed.
pub fn last_line(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(text.lines().rev().find(|l| !l.trim().is_empty())?).ok()
}
