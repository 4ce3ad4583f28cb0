//! `Coordinator`: the one owner of the run's state, shared by the gRPC service and the reaper.
//!
//! The state sits behind a std mutex: every operation is short, synchronous logic, and the
//! lock is never held across an `.await`.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tasks::{ProblemSource, Split, VerifierRegistry};
use tracing::info;

use crate::error::CoordinatorError;
use crate::settings::CoordinatorSettings;
use crate::state::State;

/// The coordinator of one run: prompt pool, leases, staleness gate, curriculum and registry.
/// Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct Coordinator {
    state: Arc<Mutex<State>>,
}

impl Coordinator {
    /// A coordinator for a fresh run over the train split of `settings.task`.
    pub fn new(settings: CoordinatorSettings) -> Result<Self, CoordinatorError> {
        settings.validate()?;
        let source = tasks::from_spec(&settings.task, settings.seed, &VerifierRegistry::new())
            .map_err(|source| CoordinatorError::Task {
                spec: settings.task.clone(),
                source,
            })?;
        info!(
            task = %settings.task,
            source = source.name(),
            train_problems = ?source.len(Split::Train),
            max_lag = settings.max_lag,
            lease_timeout_ms = settings.lease_timeout.as_millis() as u64,
            actor_timeout_ms = settings.actor_timeout.as_millis() as u64,
            "coordinator ready"
        );
        Ok(Self::from_source(settings, source))
    }

    /// A coordinator over an already-built source (tests use small fixed ones).
    pub(crate) fn from_source(
        settings: CoordinatorSettings,
        source: Box<dyn ProblemSource>,
    ) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::new(settings, source))),
        }
    }

    /// Runs one synchronous operation on the state under the lock.
    pub(crate) fn with_state<R>(&self, operation: impl FnOnce(&mut State) -> R) -> R {
        // A panic inside an operation is a bug; the state is still the best there is, so
        // keep serving rather than failing every later request.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        operation(&mut state)
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
    fn a_bad_task_spec_is_a_task_error() {
        let settings = CoordinatorSettings {
            task: "nonsense".to_string(),
            ..CoordinatorSettings::default()
        };
        let err = Coordinator::new(settings).unwrap_err();
        assert!(matches!(err, CoordinatorError::Task { .. }), "{err:?}");
        assert!(err.to_string().contains("'nonsense'"), "{err}");
    }

    #[test]
    fn a_builtin_task_starts() {
        let coordinator = Coordinator::new(CoordinatorSettings::default()).unwrap();
        let status = coordinator.with_state(|state| state.status(tokio::time::Instant::now()));
        assert_eq!(status.pool_active, 0);
        assert_eq!(status.max_lag, 8);
    }
}
