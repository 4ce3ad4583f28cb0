//! The learner's version as this actor last heard it, from two sources: the coordinator
//! (heartbeat and lease replies) and the weight stream (a version's header arrives before
//! the coordinator hears of it). The lag gate reads the higher of the two latest readings.
//!
//! Latest, not highest ever: a learner restarted from a checkpoint goes back to the
//! checkpoint's version, and an actor that kept the old, higher number would wait for
//! weights "newer than k behind" that the restarted learner will not have for many steps,
//! while the learner waits for that actor's groups.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Both readings and the value the lag gate (and the metrics) read.
#[derive(Debug, Default)]
pub(crate) struct LearnerVersion {
    coordinator: AtomicU64,
    stream: AtomicU64,
    current: Arc<AtomicU64>,
}

impl LearnerVersion {
    /// Starts at `version` (the coordinator's, at registration).
    pub fn new(version: u64) -> Arc<LearnerVersion> {
        Arc::new(LearnerVersion {
            coordinator: AtomicU64::new(version),
            stream: AtomicU64::new(0),
            current: Arc::new(AtomicU64::new(version)),
        })
    }

    /// The learner's version as the actor knows it.
    pub fn current(&self) -> &Arc<AtomicU64> {
        &self.current
    }

    /// The coordinator says the learner is at `version`.
    pub fn heard_from_coordinator(&self, version: u64) {
        self.coordinator.store(version, Ordering::Relaxed);
        self.update();
    }

    /// The weight stream announced `version` (its header arrived).
    pub fn announced(&self, version: u64) {
        self.stream.store(version, Ordering::Relaxed);
        self.update();
    }

    fn update(&self) {
        let newest = self
            .coordinator
            .load(Ordering::Relaxed)
            .max(self.stream.load(Ordering::Relaxed));
        self.current.store(newest, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_higher_latest_reading_wins_and_a_restart_brings_it_down() {
        let v = LearnerVersion::new(0);
        v.announced(5);
        // The coordinator hears of version 5 a moment after the stream announced it.
        v.heard_from_coordinator(4);
        assert_eq!(v.current().load(Ordering::Relaxed), 5);
        v.heard_from_coordinator(5);
        // The learner restarted from its checkpoint at version 2: both sources say so.
        v.heard_from_coordinator(2);
        assert_eq!(v.current().load(Ordering::Relaxed), 5);
        v.announced(2);
        assert_eq!(v.current().load(Ordering::Relaxed), 2);
    }
}
