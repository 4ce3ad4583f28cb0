//! Learning that the run's rollouts are over: the coordinator's prompt pool is exhausted
//! (every prompt retired, or the configured epochs done, and no lease out). The learner asks
//! the coordinator's status while it trains; once the pool is spent no more groups will come,
//! and the trainer finishes with the groups it holds instead of waiting for a full batch.
//!
//! Every group of a completed lease is already in the learner's queue by then: an actor
//! completes a lease only after the learner acknowledged its groups, and the learner
//! acknowledges a group once it is queued.

use std::time::Duration;

use proto::coordinator_client::CoordinatorClient;
use proto::transport::ClientChannel;
use tokio::sync::watch;

/// Polls the coordinator every `every` until its pool is exhausted (then sets `exhausted`)
/// or `stop` is set. A failed poll is tried again on the next tick: the coordinator may be
/// restarting.
pub(crate) async fn watch_pool(
    coordinator: CoordinatorClient<ClientChannel>,
    every: Duration,
    exhausted: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match coordinator.clone().status(proto::StatusRequest {}).await {
            Ok(reply) if reply.get_ref().exhausted => {
                let reply = reply.into_inner();
                tracing::debug!(
                    epoch = reply.epoch,
                    retired = reply.pool_retired,
                    "the coordinator's prompt pool is exhausted"
                );
                exhausted.send_replace(true);
                return;
            }
            Ok(_) => {}
            Err(status) => tracing::debug!(
                error = %status.message(),
                "could not ask the coordinator whether its pool is exhausted"
            ),
        }
    }
}
