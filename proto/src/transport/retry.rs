//! Calls to a peer that may come back: which failures are worth another try, how long to wait
//! between tries (exponential backoff), and when to give up with an error that says why.
//!
//! A peer that refuses or drops connections is down or restarting (a coordinator replaying
//! its journal, a learner loading its checkpoint): calls are retried until it has been
//! unreachable for [`RetryLimits::outage`]. A peer that takes calls and never answers is
//! hung: after [`RetryLimits::timeouts`] request timeouts without a success in between the
//! caller gives up rather than wait on it forever. Anything else (a refused token, an invalid request) fails at once.

use super::{ClientChannel, Security, TransportError};
use crate::coordinator_client::CoordinatorClient;
use std::time::Duration;
use tokio::time::Instant;
use tonic::{Code, Status};

/// First wait after a failure; doubled after each further one, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between two tries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What a failed call says about its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Connection refused, reset or dropped, or the peer is shutting down: try again later.
    Unreachable,
    /// The call was sent and no answer came within the request timeout.
    Timeout,
    /// The peer answered with an error that another try would get again.
    Fatal,
}

/// Classifies a failed call by its status code. A handler's panic (`INTERNAL` marked with
/// [`PANIC_METADATA`](super::catch_panic::PANIC_METADATA)) is fatal: the same request would
/// hit the same bug.
pub fn classify(status: &Status) -> Failure {
    if super::catch_panic::is_handler_panic(status) {
        return Failure::Fatal;
    }
    match status.code() {
        // tonic reports connect errors and dropped connections as Unavailable, a broken
        // stream as Unknown or Internal; servers that are stopping answer Unavailable.
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Aborted => Failure::Unreachable,
        // tonic's client-side request timeout is Cancelled ("Timeout expired").
        Code::Cancelled | Code::DeadlineExceeded => Failure::Timeout,
        _ => Failure::Fatal,
    }
}

/// A status as the retry messages quote it: `Unavailable: connection refused`.
fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Why a retried call was given up on: which call to which peer (`what`), and the last
/// status it got, kept whole for callers that look at its code.
#[derive(Debug, thiserror::Error)]
pub enum GaveUp {
    /// The peer answered with an error another try would get again (a refused token, an
    /// invalid request).
    #[error("{what}: {}", describe(status))]
    Refused { what: String, status: Status },
    /// The peer takes calls and does not answer them.
    #[error(
        "{what}: the peer did not answer within {request_timeout:?}, {timeouts} times without a \
         success ({}); it accepts connections but does not respond: hung, overloaded, or not \
         an oxrl server",
        describe(status)
    )]
    Hung {
        what: String,
        request_timeout: Duration,
        timeouts: u32,
        status: Status,
    },
    /// The peer has been unreachable for longer than the outage limit.
    #[error(
        "{what}: the peer has been unreachable for {down_for:?}; last error {}",
        describe(status)
    )]
    Down {
        what: String,
        down_for: Duration,
        status: Status,
    },
}

impl GaveUp {
    /// The last status the call got.
    pub fn status(&self) -> &Status {
        match self {
            GaveUp::Refused { status, .. }
            | GaveUp::Hung { status, .. }
            | GaveUp::Down { status, .. } => status,
        }
    }
}

/// Opens a channel to `url`, retrying with backoff while the peer is unreachable (it may start
/// after us, or be restarting) for up to `deadline`; configuration errors (a bad URL, TLS
/// files) fail at once.
pub async fn connect(
    security: &Security,
    url: &str,
    deadline: Duration,
) -> Result<ClientChannel, ConnectError> {
    let started = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        match security.channel(url).await {
            Ok(channel) => return Ok(channel),
            Err(e) if !e.is_unreachable() => return Err(ConnectError::Config(e)),
            Err(last) if started.elapsed() > deadline => {
                return Err(ConnectError::Unreachable {
                    url: url.to_string(),
                    deadline,
                    last,
                })
            }
            Err(e) => {
                tracing::debug!(url, error = %e, "peer not reachable yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// [`connect`] to a coordinator, as a client with the message-size limits every role uses.
pub async fn connect_coordinator(
    security: &Security,
    url: &str,
    deadline: Duration,
) -> Result<CoordinatorClient<ClientChannel>, ConnectError> {
    let channel = connect(security, url, deadline).await?;
    Ok(CoordinatorClient::new(channel)
        .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::MAX_MESSAGE_BYTES))
}

/// Registers with the coordinator as `request` says (an actor, or the learner with its
/// address), retrying while the coordinator is down or restarting.
pub async fn register(
    coordinator: &CoordinatorClient<ClientChannel>,
    request: crate::RegisterRequest,
    retry: &mut Retry,
) -> Result<crate::RegisterReply, GaveUp> {
    let reply = retry
        .run(|| {
            let (mut c, r) = (coordinator.clone(), request.clone());
            async move { c.register(r).await }
        })
        .await?;
    Ok(reply.into_inner())
}

/// Why [`connect`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL or the TLS settings are wrong; retrying would not help.
    #[error(transparent)]
    Config(TransportError),
    /// The peer stayed unreachable past the deadline.
    #[error("{url} unreachable for {deadline:?}: {last}")]
    Unreachable {
        url: String,
        deadline: Duration,
        last: TransportError,
    },
}

/// How long a caller keeps trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryLimits {
    /// Give up once the peer has been failing for this long.
    pub outage: Duration,
    /// Give up after this many request timeouts without a success in between.
    pub timeouts: u32,
}

impl Default for RetryLimits {
    fn default() -> Self {
        RetryLimits {
            outage: Duration::from_secs(300),
            timeouts: 3,
        }
    }
}

/// The retry state of one kind of call to one peer ("leasing from the coordinator at
/// http://10.0.0.2:7000"). Reset by a success.
#[derive(Debug, Clone)]
pub struct Retry {
    what: String,
    limits: RetryLimits,
    request_timeout: Duration,
    backoff: Duration,
    failing_since: Option<Instant>,
    timeouts: u32,
}

impl Retry {
    /// Retries of `what` (named in logs and errors, with its peer) under `limits`;
    /// `request_timeout` is the client's, quoted when a hung peer is given up on.
    pub fn new(what: impl Into<String>, limits: RetryLimits, request_timeout: Duration) -> Retry {
        Retry {
            what: what.into(),
            limits,
            request_timeout,
            backoff: FIRST_BACKOFF,
            failing_since: None,
            timeouts: 0,
        }
    }

    /// The call worked: the next failure starts a fresh outage.
    pub fn succeeded(&mut self) {
        self.backoff = FIRST_BACKOFF;
        self.failing_since = None;
        self.timeouts = 0;
    }

    /// Records a failed call: `Ok(wait)` before the next try, or `Err(why)` to give up.
    pub fn failed(&mut self, status: &Status) -> Result<Duration, GaveUp> {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        let what = || self.what.clone();
        match classify(status) {
            Failure::Fatal => {
                return Err(GaveUp::Refused {
                    what: what(),
                    status: status.clone(),
                })
            }
            Failure::Timeout => {
                self.timeouts += 1;
                if self.timeouts >= self.limits.timeouts {
                    return Err(GaveUp::Hung {
                        what: what(),
                        request_timeout: self.request_timeout,
                        timeouts: self.timeouts,
                        status: status.clone(),
                    });
                }
            }
            // A hung peer's connection is also closed by keepalive (Unavailable) between
            // its timeouts: those do not reset the count, only a success does.
            Failure::Unreachable => {}
        }
        if since.elapsed() >= self.limits.outage {
            return Err(GaveUp::Down {
                what: what(),
                down_for: since.elapsed(),
                status: status.clone(),
            });
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        let error = describe(status);
        tracing::warn!(call = %self.what, %error, retry_in = ?wait, "call failed; retrying");
        Ok(wait)
    }

    /// Runs `call` until it succeeds, sleeping between tries, or gives up.
    pub async fn run<T, F, Fut>(&mut self, mut call: F) -> Result<T, GaveUp>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        loop {
            match call().await {
                Ok(value) => {
                    self.succeeded();
                    return Ok(value);
                }
                Err(status) => tokio::time::sleep(self.failed(&status)?).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(limits: RetryLimits) -> Retry {
        Retry::new("leasing from c", limits, Duration::from_secs(1))
    }

    #[test]
    fn codes_are_classified_by_what_another_try_can_change() {
        assert_eq!(
            classify(&Status::unavailable("refused")),
            Failure::Unreachable
        );
        assert_eq!(classify(&Status::unknown("reset")), Failure::Unreachable);
        assert_eq!(
            classify(&Status::cancelled("Timeout expired")),
            Failure::Timeout
        );
        assert_eq!(classify(&Status::deadline_exceeded("")), Failure::Timeout);
        assert_eq!(
            classify(&Status::unauthenticated("wrong token")),
            Failure::Fatal
        );
        assert_eq!(classify(&Status::invalid_argument("")), Failure::Fatal);
        assert_eq!(classify(&Status::not_found("")), Failure::Fatal);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_to_its_cap_and_a_success_resets_it() {
        let mut r = retry(RetryLimits::default());
        let waits: Vec<_> = (0..8)
            .map(|_| r.failed(&Status::unavailable("down")).unwrap())
            .collect();
        assert_eq!(waits[0], FIRST_BACKOFF);
        assert_eq!(waits[1], FIRST_BACKOFF * 2);
        assert_eq!(*waits.last().unwrap(), MAX_BACKOFF);
        r.succeeded();
        assert_eq!(
            r.failed(&Status::unavailable("down")).unwrap(),
            FIRST_BACKOFF
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_longer_than_the_limit_gives_up_and_says_so() {
        let mut r = retry(RetryLimits {
            outage: Duration::from_secs(10),
            timeouts: 3,
        });
        assert!(r.failed(&Status::unavailable("refused")).is_ok());
        tokio::time::advance(Duration::from_secs(11)).await;
        let err = r
            .failed(&Status::unavailable("refused"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("leasing from c: the peer has been unreachable for"),
            "{err}"
        );
        assert!(err.contains("refused"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_peer_is_given_up_after_a_few_timeouts() {
        let mut r = retry(RetryLimits {
            outage: Duration::from_secs(600),
            timeouts: 2,
        });
        let timeout = Status::cancelled("Timeout expired");
        assert!(r.failed(&timeout).is_ok());
        // Only a success starts the count again; keepalive closing the hung connection
        // (Unavailable) in between does not.
        r.succeeded();
        assert!(r.failed(&timeout).is_ok());
        assert!(r.failed(&Status::unavailable("ping timeout")).is_ok());
        let err = r.failed(&timeout).unwrap_err().to_string();
        assert!(
            err.contains("did not answer within 1s, 2 times without a success"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fatal_errors_are_not_retried() {
        let mut r = retry(RetryLimits::default());
        let mut calls = 0;
        let out: Result<(), GaveUp> = r
            .run(|| {
                calls += 1;
                async { Err(Status::unauthenticated("wrong bearer token")) }
            })
            .await;
        assert_eq!(calls, 1);
        let err = out.unwrap_err();
        assert_eq!(err.status().code(), Code::Unauthenticated);
        assert_eq!(
            err.to_string(),
            "leasing from c: Unauthenticated: wrong bearer token"
        );
        let mut left = 3;
        let out = r
            .run(|| {
                left -= 1;
                let result = if left == 0 {
                    Ok(7)
                } else {
                    Err(Status::unavailable("restarting"))
                };
                async move { result }
            })
            .await;
        assert_eq!(out.unwrap(), 7);
    }
}
