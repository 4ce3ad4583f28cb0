//! The background reaper: every ~100 ms of tokio time it expires overdue leases and declares
//! silent actors dead, so prompts come back even when no request arrives to trigger it, and
//! syncs the journal to disk when anything was written.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{self, Instant, MissedTickBehavior};

use crate::handle::Coordinator;

/// How often the reaper runs.
pub(crate) const REAP_INTERVAL: Duration = Duration::from_millis(100);

/// Reaps every `REAP_INTERVAL` until `stop` fires or its sender is dropped.
pub(crate) async fn run(coordinator: Coordinator, mut stop: oneshot::Receiver<()>) {
    let mut ticks = time::interval(REAP_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticks.tick() => {
                // After a journal failure the server is stopping; nothing more to reap.
                let _ = coordinator.with_state(|state| state.reap(Instant::now()));
                coordinator.sync_journal();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use proto::coordinator_server::Coordinator as _;
    use tonic::Request;

    use super::*;
    use crate::domain::StatusSnapshot;
    use crate::pool::tests::FixedSource;

    const LEASE_TIMEOUT: Duration = Duration::from_secs(10);
    const ACTOR_TIMEOUT: Duration = Duration::from_secs(5);

    fn coordinator_with(lease_timeout: Duration, actor_timeout: Duration) -> Coordinator {
        let run = crate::test_run(|run| {
            run.pipeline.lease_timeout_s = lease_timeout.as_secs_f64();
            run.pipeline.actor_timeout_s = actor_timeout.as_secs_f64();
        });
        Coordinator::from_source(run, Box::new(FixedSource { len: None }))
    }

    fn coordinator() -> Coordinator {
        coordinator_with(LEASE_TIMEOUT, ACTOR_TIMEOUT)
    }

    /// The state as the reaper left it: no request has reaped it on the way.
    fn snapshot(coordinator: &Coordinator) -> StatusSnapshot {
        coordinator
            .with_state(|state| state.snapshot(Instant::now()))
            .unwrap()
    }

    async fn register(coordinator: &Coordinator, name: &str) -> String {
        let request = proto::RegisterRequest {
            role: proto::Role::Actor as i32,
            advertise_addr: String::new(),
            name: name.to_string(),
        };
        let reply = coordinator.register(Request::new(request)).await.unwrap();
        reply.into_inner().member_id
    }

    async fn heartbeat(coordinator: &Coordinator, member_id: &str) -> proto::HeartbeatReply {
        let request = proto::HeartbeatRequest {
            member_id: member_id.to_string(),
            version: 0,
            env: None,
        };
        coordinator
            .heartbeat(Request::new(request))
            .await
            .unwrap()
            .into_inner()
    }

    async fn lease(
        coordinator: &Coordinator,
        member_id: &str,
        max_prompts: u32,
    ) -> Result<Vec<String>, tonic::Status> {
        let request = proto::LeaseRequest {
            member_id: member_id.to_string(),
            version: 0,
            max_prompts,
        };
        let reply = coordinator.lease(Request::new(request)).await?.into_inner();
        assert_eq!(reply.refused(), proto::LeaseRefusal::Unspecified);
        Ok(reply.prompts.into_iter().map(|p| p.problem_id).collect())
    }

    /// Runs `step` (heartbeats) every 500 ms of virtual time until `done` holds, failing after
    /// `limit`.
    async fn keep_alive_until<F: Future<Output = ()>>(
        what: &str,
        limit: Duration,
        mut step: impl FnMut() -> F,
        mut done: impl FnMut() -> bool,
    ) {
        let give_up = Instant::now() + limit;
        while !done() {
            assert!(Instant::now() < give_up, "timed out waiting for {what}");
            step().await;
            time::sleep(Duration::from_millis(500)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expired_leases_go_to_another_actor_and_silent_actors_die() {
        let coordinator = coordinator();
        let (stop, stop_rx) = oneshot::channel();
        let reaper = tokio::spawn(run(coordinator.clone(), stop_rx));
        let start = Instant::now();

        let slow = register(&coordinator, "slow").await;
        let other = register(&coordinator, "other").await;
        assert_eq!(
            lease(&coordinator, &slow, 2).await.unwrap(),
            ["fixed/0", "fixed/1"]
        );

        // Both keep heartbeating; only the lease runs out, and only at its deadline.
        keep_alive_until(
            "the lease to expire",
            LEASE_TIMEOUT * 2,
            || async {
                heartbeat(&coordinator, &slow).await;
                heartbeat(&coordinator, &other).await;
            },
            || snapshot(&coordinator).leases_expired == 1,
        )
        .await;
        assert!(
            start.elapsed() >= LEASE_TIMEOUT,
            "expired early: {:?}",
            start.elapsed()
        );
        assert_eq!(
            lease(&coordinator, &other, 2).await.unwrap(),
            ["fixed/0", "fixed/1"]
        );

        // The slow actor takes a fresh lease and falls silent; it dies long before that lease's
        // deadline, and the lease comes back with it.
        assert_eq!(
            lease(&coordinator, &slow, 2).await.unwrap(),
            ["fixed/2", "fixed/3"]
        );
        let silent_since = Instant::now();
        keep_alive_until(
            "the silent actor to be declared dead",
            ACTOR_TIMEOUT * 2,
            || async {
                heartbeat(&coordinator, &other).await;
            },
            || snapshot(&coordinator).actors.iter().any(|a| !a.alive),
        )
        .await;
        assert!(silent_since.elapsed() >= ACTOR_TIMEOUT);
        assert!(
            silent_since.elapsed() < LEASE_TIMEOUT,
            "died of silence, not lease expiry"
        );
        let status = snapshot(&coordinator);
        assert_eq!(status.leases_expired, 2);
        let alive: Vec<_> = status
            .actors
            .iter()
            .map(|a| (a.member_id.as_str(), a.alive))
            .collect();
        assert_eq!(alive, [(other.as_str(), true), (slow.as_str(), false)]);

        assert_eq!(
            lease(&coordinator, &other, 2).await.unwrap(),
            ["fixed/2", "fixed/3"]
        );
        assert!(heartbeat(&coordinator, &slow).await.unknown_member);
        let refused = lease(&coordinator, &slow, 1).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::NotFound);

        stop.send(()).unwrap();
        reaper.await.unwrap();
    }

    /// Waits in virtual time, sending nothing, until `done` holds; returns the time waited.
    async fn idle_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < limit, "timed out waiting for {what}");
            time::sleep(Duration::from_millis(10)).await;
        }
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_request_at_all_the_reaper_expires_leases_and_actors_on_time() {
        let lease_timeout = Duration::from_secs(2);
        let coordinator = coordinator_with(lease_timeout, ACTOR_TIMEOUT);
        let (stop, stop_rx) = oneshot::channel();
        let reaper = tokio::spawn(run(coordinator.clone(), stop_rx));
        let actor = register(&coordinator, "quiet").await;
        lease(&coordinator, &actor, 3).await.unwrap();

        let waited = idle_until("the lease to expire", lease_timeout * 2, || {
            snapshot(&coordinator).leases_expired == 1
        })
        .await;
        assert!(
            waited >= lease_timeout && waited <= lease_timeout + REAP_INTERVAL,
            "{waited:?}"
        );
        assert_eq!(snapshot(&coordinator).leases_outstanding, 0);

        let waited = idle_until("the actor to die", ACTOR_TIMEOUT * 2, || {
            snapshot(&coordinator).actors.iter().all(|a| !a.alive)
        })
        .await;
        let silent = lease_timeout + waited;
        assert!(
            silent >= ACTOR_TIMEOUT && silent <= ACTOR_TIMEOUT + 2 * REAP_INTERVAL,
            "{silent:?}"
        );

        stop.send(()).unwrap();
        reaper.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_reaper_stops_when_its_sender_is_dropped() {
        let (stop, stop_rx) = oneshot::channel::<()>();
        let reaper = tokio::spawn(run(coordinator(), stop_rx));
        drop(stop);
        time::timeout(Duration::from_secs(1), reaper)
            .await
            .expect("reaper stopped")
            .unwrap();
    }
}
