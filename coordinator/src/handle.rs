//! `Coordinator`: the one owner of the run's state, shared by the gRPC service and the reaper.
//! With a journal, it replays the journal into the state on start and appends the records of
//! every operation before the operation's answer leaves.
//!
//! It also holds the run's Prometheus metrics (`metrics.rs`), which the service counts
//! rejections into and `/metrics` renders.
//!
//! The state sits behind a std mutex: every operation is short, synchronous logic (plus, with a
//! journal, one buffered-by-the-kernel write), and the lock is never held across an `.await`.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};

use rollout::config::RunConfig;
use tasks::{ProblemSource, Split, VerifierRegistry};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info};

use crate::error::CoordinatorError;
use crate::history::RunView;
use crate::journal::{Journal, JournalOptions, RunId, SyncHandle};
use crate::metrics::{CoordinatorMetrics, Rejection};
use crate::state::{Resume, State};

/// The coordinator of one run: prompt pool, leases, staleness gate, curriculum and registry.
/// Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Mutex<Inner>>,
    /// Syncs the journal without the lock (the reaper's tick); None without a journal.
    sync: Option<SyncHandle>,
    /// Becomes true when the journal fails: the server stops.
    failed: watch::Sender<bool>,
    metrics: Arc<CoordinatorMetrics>,
}

struct Inner {
    state: State,
    journal: Option<Journal>,
    /// The journal's first failure; every later operation is refused with it.
    failure: Option<CoordinatorError>,
}

impl Coordinator {
    /// A coordinator of the run `run` describes (validated here: every run parameter comes
    /// from it), over the train split of its task: a fresh run, or with `journal` naming an
    /// existing journal, the run it records. The journal (with its compaction threshold) is
    /// the one setting of the process.
    pub fn new(run: RunConfig, journal: Option<JournalOptions>) -> Result<Self, CoordinatorError> {
        run.validate()?;
        // The same problems, indexed the same way, as the learner and the actors build.
        let source = run
            .problem_source(&VerifierRegistry::new())
            .map_err(|source| CoordinatorError::Task {
                spec: run.task.clone(),
                source,
            })?;
        let p = &run.pipeline;
        info!(
            task = %run.task,
            source = source.name(),
            train_problems = ?source.len(Split::Train),
            epochs = run.epochs,
            pass_rate_window = p.pass_rate_window,
            max_lag = run.update.max_lag,
            lease_timeout_ms = p.lease_timeout().as_millis() as u64,
            actor_timeout_ms = p.actor_timeout().as_millis() as u64,
            journal = ?journal,
            "coordinator ready"
        );
        Self::open(run, journal, source)
    }

    /// A coordinator over an already-built source (tests use small fixed ones), replaying
    /// `journal` if it names one.
    pub(crate) fn open(
        run: RunConfig,
        journal: Option<JournalOptions>,
        source: Box<dyn ProblemSource>,
    ) -> Result<Self, CoordinatorError> {
        run.validate()?;
        let id = RunId {
            task: run.task.clone(),
            seed: run.seed,
            train_size: source.len(Split::Train),
        };
        let mut state = State::new(run, source);
        let journal = match journal {
            None => None,
            Some(options) => Some(replay_journal(&mut state, &options, id)?),
        };
        let sync = journal.as_ref().map(Journal::sync_handle);
        let (failed, _) = watch::channel(false);
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                state,
                journal,
                failure: None,
            })),
            sync,
            failed,
            metrics: Arc::new(CoordinatorMetrics::new()),
        })
    }

    /// A coordinator over an already-built source, without a journal.
    #[cfg(test)]
    pub(crate) fn from_source(run: RunConfig, source: Box<dyn ProblemSource>) -> Self {
        Self::open(run, None, source).expect("a valid test config and no journal to fail")
    }

    /// Runs one synchronous operation on the state under the lock, then journals what it
    /// changed. Fails, without running it, once the journal has failed.
    pub(crate) fn with_state<R>(
        &self,
        operation: impl FnOnce(&mut State) -> R,
    ) -> Result<R, CoordinatorError> {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let inner = &mut *guard;
        if let Some(failure) = &inner.failure {
            return Err(failed_again(failure));
        }
        // A panic inside an operation is a bug: that request is refused, and the state, the
        // best there is, keeps serving (what the operation changed before it panicked is
        // journaled with it, so a replay rebuilds the same state).
        let answer = std::panic::catch_unwind(AssertUnwindSafe(|| operation(&mut inner.state)));
        let records = inner.state.take_records();
        let answer = answer.map_err(|payload| {
            let message = panic_message(payload.as_ref());
            error!(panic = %message, "a coordinator operation panicked: the request is refused");
            CoordinatorError::Bug { message }
        });
        let Some(journal) = inner.journal.as_mut() else {
            return answer;
        };
        let appended = journal.append(&records).and_then(|()| {
            if journal.compaction_due() {
                // Under the lock: the snapshot is the state after every record in the tail.
                journal.compact(inner.state.image())?;
            }
            Ok(())
        });
        match appended {
            Ok(()) => answer,
            Err(e) => {
                error!(error = %e, "the journal failed: the coordinator stops");
                let refused = failed_again(&e);
                inner.failure = Some(e);
                self.failed.send_replace(true);
                Err(refused)
            }
        }
    }

    /// Records in the journal's tail (0 without a journal).
    pub(crate) fn journal_tail_records(&self) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.journal.as_ref().map_or(0, Journal::tail_records)
    }

    /// The status and step history for `/metrics` and the dashboard (reaping first, as the
    /// gRPC status does).
    pub(crate) fn view(&self) -> Result<RunView, CoordinatorError> {
        let now = Instant::now();
        self.with_state(|state| state.view(now))
    }

    /// The run's metrics.
    pub(crate) fn metrics(&self) -> &CoordinatorMetrics {
        &self.metrics
    }

    /// Counts a refusal in `oxrl_rejected_total`.
    pub(crate) fn reject(&self, reason: Rejection) {
        self.metrics.reject(reason);
    }

    /// Syncs the journal to disk if anything was written since the last sync (the reaper calls
    /// this every tick); a failure stops the coordinator like a failed write.
    pub(crate) fn sync_journal(&self) {
        let Some(sync) = &self.sync else {
            return;
        };
        if let Err(e) = sync.sync() {
            error!(error = %e, "syncing the journal failed: the coordinator stops");
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            inner.failure.get_or_insert(e);
            self.failed.send_replace(true);
        }
    }

    /// Resolves once the journal has failed (never without a journal).
    pub(crate) async fn journal_failed(&self) {
        let mut failed = self.failed.subscribe();
        let _ = failed.wait_for(|f| *f).await;
    }

    /// The journal's failure, if it failed.
    pub(crate) fn failure(&self) -> Option<CoordinatorError> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.failure.as_ref().map(failed_again)
    }
}

/// Opens the journal `options` names and brings `state` to where it stands: the snapshot
/// restored, then the tail replayed; compacts at once if the tail is past the threshold.
fn replay_journal(
    state: &mut State,
    options: &JournalOptions,
    run: RunId,
) -> Result<Journal, CoordinatorError> {
    let path = &options.path;
    let opened = Journal::open(path, run, options.compact_every)?;
    let now = Instant::now();
    let resume = match opened.snapshot {
        None => Resume::default(),
        Some(snapshot) => state
            .restore(snapshot.state, snapshot.t, now)
            .map_err(|reason| CoordinatorError::Snapshot {
                path: crate::snapshot::path_for(path),
                reason,
            })?,
    };
    let replayed = state
        .replay_from(resume, opened.entries, now)
        .map_err(|(line, reason)| CoordinatorError::Journal {
            path: path.clone(),
            line,
            reason,
        })?;
    if replayed.records > 0 {
        info!(
            journal = %path.display(),
            records = replayed.records,
            outstanding_leases = replayed.outstanding_leases,
            learner_version = replayed.learner_version,
            "replayed the journal: the run continues where it stood"
        );
    }
    let mut journal = opened.journal;
    if journal.compaction_due() {
        journal.compact(state.image())?;
    }
    Ok(journal)
}

/// What a panic carried, as text.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// The error later operations get after the journal failed with `failure`.
fn failed_again(failure: &CoordinatorError) -> CoordinatorError {
    match failure {
        CoordinatorError::JournalFailed { path, reason } => CoordinatorError::JournalFailed {
            path: path.clone(),
            reason: reason.clone(),
        },
        CoordinatorError::JournalIo { path, source } => CoordinatorError::JournalFailed {
            path: path.clone(),
            reason: source.to_string(),
        },
        other => CoordinatorError::JournalFailed {
            path: Default::default(),
            reason: other.to_string(),
        },
    }
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_that_panics_is_refused_and_the_next_one_is_served() {
        let coordinator = Coordinator::from_source(
            crate::test_run(|_| {}),
            Box::new(crate::pool::tests::FixedSource { len: None }),
        );
        let err = coordinator
            .with_state(|_| -> u64 { panic!("injected fault") })
            .unwrap_err();
        assert!(matches!(err, CoordinatorError::Bug { .. }), "{err:?}");
        assert!(err.to_string().contains("injected fault"), "{err}");
        let status = crate::service::to_status(err);
        assert_eq!(status.code(), tonic::Code::Internal);
        // The lock is not poisoned and the state still answers.
        let snapshot = coordinator.with_state(|state| state.snapshot(Instant::now()));
        assert!(snapshot.is_ok());
        assert!(coordinator.failure().is_none());
    }

    #[test]
    fn a_bad_task_spec_is_a_task_error() {
        let run = RunConfig {
            task: "nonsense".to_string(),
            ..RunConfig::default()
        };
        let err = Coordinator::new(run, None).unwrap_err();
        assert!(matches!(err, CoordinatorError::Task { .. }), "{err:?}");
        assert!(err.to_string().contains("'nonsense'"), "{err}");
    }

    #[test]
    fn a_run_config_out_of_range_is_refused_by_name() {
        let mut run = RunConfig::default();
        run.pipeline.lease_timeout_s = 0.0;
        let err = Coordinator::new(run, None).unwrap_err();
        assert!(matches!(err, CoordinatorError::Config(_)), "{err:?}");
        assert!(
            err.to_string().contains("pipeline.lease_timeout_s"),
            "{err}"
        );
    }

    #[test]
    fn a_builtin_task_starts() {
        let coordinator = Coordinator::new(RunConfig::default(), None).unwrap();
        let status = coordinator
            .with_state(|state| state.status(tokio::time::Instant::now()))
            .unwrap();
        assert_eq!(
            status.pool_active,
            RunConfig::default().train_size,
            "a pool of train_size prompts"
        );
        assert_eq!((status.epoch, status.exhausted), (0, false));
        assert_eq!(status.max_lag, RunConfig::default().update.max_lag);
        let stream = Coordinator::new(
            RunConfig {
                train_size: 0,
                ..RunConfig::default()
            },
            None,
        )
        .unwrap();
        let status = stream
            .with_state(|state| state.status(tokio::time::Instant::now()))
            .unwrap();
        assert_eq!(
            (status.pool_active, status.pool_size),
            (0, None),
            "unbounded"
        );
    }
}
