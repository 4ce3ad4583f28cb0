//! The actor's heartbeats: liveness and the environment figures (calls, seconds, groups
//! dropped) for the coordinator, and back from it the learner's
//! version, the learner's address (which moves when the learner restarts elsewhere) and the
//! run's end.

use crate::learner_version::LearnerVersion;
use proto::coordinator_client::CoordinatorClient;
use proto::shutdown::Shutdown;
use proto::transport::ClientChannel;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A heartbeat loop's inputs and outputs.
pub(crate) struct Heartbeats {
    pub coord: CoordinatorClient<ClientChannel>,
    /// The coordinator's URL, for logs.
    pub url: String,
    /// The member id, a new one when the actor registers again.
    pub member: watch::Receiver<String>,
    /// The version the actor holds, reported with each beat.
    pub held: Arc<AtomicU64>,
    pub versions: Arc<LearnerVersion>,
    /// The learner's address, updated when a beat brings a new one.
    pub learner_addr: watch::Sender<String>,
    pub stop: Shutdown,
    /// Where the environment figures each beat reports come from.
    pub metrics: Arc<crate::metrics::ActorMetrics>,
    pub every: Duration,
}

impl Heartbeats {
    /// Beats every `every` until the coordinator says the run is over (which sets `stop`)
    /// or `stop` is set.
    pub async fn run(mut self) {
        let mut failing = false;
        loop {
            let req = proto::HeartbeatRequest {
                member_id: self.member.borrow().clone(),
                version: self.held.load(Ordering::Relaxed),
                env: Some(self.metrics.env_totals()),
            };
            let beat = self.coord.heartbeat(req).await.map(|r| r.into_inner());
            match &beat {
                Err(s) if !failing => {
                    tracing::warn!(coordinator = %self.url, error = %s.message(), "heartbeat failed; retrying");
                }
                Ok(_) if failing => {
                    tracing::info!(coordinator = %self.url, "heartbeats answered again")
                }
                _ => {}
            }
            failing = beat.is_err();
            if let Ok(r) = beat {
                if self.heard(r) {
                    return;
                }
            }
            if self.stop.sleep(self.every).await {
                return;
            }
        }
    }

    /// Takes in what a beat brought; true when the run is over.
    fn heard(&self, r: proto::HeartbeatReply) -> bool {
        self.versions.heard_from_coordinator(r.learner_version);
        if !r.learner_addr.is_empty() {
            self.learner_addr.send_if_modified(|a| {
                let changed = *a != r.learner_addr;
                *a = r.learner_addr.clone();
                changed
            });
        }
        if r.stop && self.stop.trigger() {
            tracing::info!(
                "the coordinator says the run is over (the learner is done or \
                 the prompt pool is exhausted): stopping"
            );
        }
        r.stop
    }
}
