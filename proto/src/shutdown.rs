//! A process's one shutdown signal: set once (an outside Ctrl-C or SIGTERM, the run's end, a
//! fatal error) and seen by every task, async or blocking. It lives here, beside the transport,
//! because every role depends on `proto` and on no other role.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The shutdown signal; clones share it. Async code waits on it ([`Shutdown::wait`],
/// [`Shutdown::receiver`]); blocking code (a decode thread) polls [`Shutdown::flag`].
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Mirrors the watch for threads that cannot await: set before the watch is.
    flag: Arc<AtomicBool>,
    watch: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A signal not yet set.
    pub fn new() -> Shutdown {
        Shutdown {
            flag: Arc::new(AtomicBool::new(false)),
            watch: Arc::new(watch::channel(false).0),
        }
    }

    /// A signal that is also set when `outside` resolves (spawned on the current runtime).
    pub fn on(outside: impl Future<Output = ()> + Send + 'static) -> Shutdown {
        let shutdown = Shutdown::new();
        let set = shutdown.clone();
        tokio::spawn(async move {
            outside.await;
            set.trigger();
        });
        shutdown
    }

    /// Sets the signal; true for the call that set it first (so a reason is logged once).
    pub fn trigger(&self) -> bool {
        let first = !self.flag.swap(true, Ordering::Relaxed);
        self.watch.send_replace(true);
        first
    }

    /// Whether the signal is set.
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// Resolves once the signal is set.
    pub async fn wait(&self) {
        let mut rx = self.watch.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Sleeps `duration`; true if the signal is set first (or already).
    pub async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(duration) => self.is_set(),
            _ = self.wait() => true,
        }
    }

    /// A receiver of the signal, for code that selects on a `watch` (true once set).
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.watch.subscribe()
    }

    /// The signal as a flag, for blocking code that polls it between steps.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn every_view_sees_one_trigger_and_only_the_first_call_sets_it() {
        let shutdown = Shutdown::new();
        let (rx, flag) = (shutdown.receiver(), shutdown.flag());
        assert!(!shutdown.is_set() && !*rx.borrow() && !flag.load(Ordering::Relaxed));
        assert!(!shutdown.sleep(Duration::from_millis(10)).await);
        let waiter = tokio::spawn({
            let s = shutdown.clone();
            async move { s.wait().await }
        });
        assert!(shutdown.clone().trigger());
        assert!(!shutdown.trigger());
        waiter.await.unwrap();
        assert!(shutdown.is_set() && *rx.borrow() && flag.load(Ordering::Relaxed));
        assert!(shutdown.sleep(Duration::from_secs(3600)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outside_future_sets_it() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = Shutdown::on(async {
            let _ = rx.await;
        });
        assert!(!shutdown.is_set());
        tx.send(()).unwrap();
        shutdown.wait().await;
        assert!(shutdown.is_set());
    }
}
