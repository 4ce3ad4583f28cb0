//! The client of a reward server: [`RewardClient`] scores sequences on an
//! `oxrl.v1.RewardModel` server, with the run's token and TLS, a deadline on every call, and
//! retries of what another try may cure (the server unreachable or restarting, no answer in
//! time, a full queue): up to `attempts` tries in all, after waits that double from 50 ms (to
//! at most 2 s, `proto::transport::retry`) with random jitter. Every failure is a
//! [`RewardError`], never a made-up score: an answer with a wrong count of scores or a score
//! that is not finite is [`RewardError::Invalid`] at once, and so is a refused token or
//! request. The caller drops the group it was scoring and counts it.

use std::time::Duration;

use proto::reward_model_client::RewardModelClient;
use proto::transport::retry::{classify, Failure, FIRST_BACKOFF, MAX_BACKOFF};
use proto::transport::{ClientChannel, Security};
use tokio::runtime::Handle;
use tonic::{Code, Request, Status};
use tracing::{debug, warn};

/// Why sequences got no scores.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RewardError {
    /// The server could not be reached (or was busy) on any try.
    #[error("the reward server is unavailable: {0}")]
    Unavailable(String),
    /// The last try got no answer within the deadline.
    #[error("the reward server did not answer within {0:?}")]
    Timeout(Duration),
    /// An answer that cannot be used, or a refusal another try would get again.
    #[error("the reward server's answer cannot be used: {0}")]
    Invalid(String),
}

impl RewardError {
    /// A short label for logs: `rm_unavailable`, `rm_timeout`, `rm_invalid`.
    pub fn reason(&self) -> &'static str {
        match self {
            RewardError::Unavailable(_) => "rm_unavailable",
            RewardError::Timeout(_) => "rm_timeout",
            RewardError::Invalid(_) => "rm_invalid",
        }
    }
}

/// Scores sequences on one reward server; cheap to clone.
#[derive(Clone)]
pub struct RewardClient {
    url: String,
    client: RewardModelClient<ClientChannel>,
    timeout: Duration,
    attempts: u32,
    runtime: Handle,
}

impl std::fmt::Debug for RewardClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RewardClient")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .finish()
    }
}

impl RewardClient {
    /// A client of the server at `url` with the token and TLS of `security`; every call has
    /// the deadline `timeout` and is tried up to `attempts` times (at least once). The
    /// connection is opened on first use (a server may start after its clients); a bad URL
    /// is [`RewardError::Invalid`] here. Its connection lives on `runtime`.
    pub fn connect(
        url: &str,
        security: &Security,
        timeout: Duration,
        attempts: u32,
        runtime: Handle,
    ) -> Result<RewardClient, RewardError> {
        let mut timeouts = security.timeouts();
        timeouts.connect = timeouts.connect.min(timeout);
        timeouts.request = timeout;
        let security = security.clone().with_timeouts(timeouts);
        let channel = {
            let _entered = runtime.enter();
            security.lazy_channel(url)
        }
        .map_err(|e| RewardError::Invalid(format!("reward server {url}: {e}")))?;
        let client = RewardModelClient::new(channel)
            .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(proto::MAX_MESSAGE_BYTES);
        Ok(RewardClient {
            url: url.to_string(),
            client,
            timeout,
            attempts: attempts.max(1),
            runtime,
        })
    }

    /// The server's URL, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// [`RewardClient::score`] from a plain thread (never from an async task).
    pub fn score_blocking(&self, sequences: &[Vec<u32>]) -> Result<Vec<f32>, RewardError> {
        self.block_on(self.score(sequences))
    }

    /// Runs `calls` (e.g. several [`RewardClient::score`]s at once) on the client's runtime
    /// from a plain thread (never from an async task).
    pub fn block_on<T>(&self, calls: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(calls)
    }

    /// One raw score per sequence, every one finite.
    pub async fn score(&self, sequences: &[Vec<u32>]) -> Result<Vec<f32>, RewardError> {
        let request = proto::ScoreRequest {
            sequences: sequences
                .iter()
                .map(|s| proto::ScoredSequence { tokens: s.clone() })
                .collect(),
        };
        let scores = self.call(&request).await?;
        checked(scores, sequences.len()).map_err(|e| {
            warn!(url = %self.url, error = %e, "the reward server answered garbage");
            e
        })
    }

    /// Sends `request` until it is answered, retrying transient failures.
    async fn call(&self, request: &proto::ScoreRequest) -> Result<Vec<f32>, RewardError> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let mut message = Request::new(request.clone());
            message.set_timeout(self.timeout);
            let mut client = self.client.clone();
            let failed = match tokio::time::timeout(self.timeout, client.score(message)).await {
                Ok(Ok(reply)) => return Ok(reply.into_inner().scores),
                Ok(Err(status)) => match transient(&status) {
                    Some(failed) => failed,
                    None => return Err(self.refused(&status)),
                },
                Err(_) => RewardError::Timeout(self.timeout),
            };
            if attempt >= self.attempts {
                warn!(url = %self.url, attempts = attempt, error = %failed, "the reward server did not answer; giving up");
                return Err(failed);
            }
            let wait = backoff.mul_f64(0.5 + 0.5 * rand::random::<f64>());
            debug!(url = %self.url, attempt, error = %failed, retry_in = ?wait, "score call failed; retrying");
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }

    /// The error for an answer another try would get again.
    fn refused(&self, status: &Status) -> RewardError {
        let hint = match status.code() {
            Code::Unauthenticated => {
                " (the server wants another token: give the run the same --auth-token-file or \
                 OXRL_AUTH_TOKEN as `oxrl rm serve`)"
            }
            _ => "",
        };
        RewardError::Invalid(format!("{}: {}{hint}", self.url, describe(status)))
    }
}

/// `scores` if they are `expected` finite numbers.
pub(crate) fn checked(scores: Vec<f32>, expected: usize) -> Result<Vec<f32>, RewardError> {
    if scores.len() != expected {
        return Err(RewardError::Invalid(format!(
            "{} scores for {expected} sequences",
            scores.len()
        )));
    }
    if let Some((i, v)) = scores.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(RewardError::Invalid(format!(
            "score {v} for sequence {i} (a score must be finite)"
        )));
    }
    Ok(scores)
}

/// A status as errors and logs quote it: `Unavailable: connection refused`.
fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// A failure worth another try, or None: the shared classification
/// (`proto::transport::retry::classify`), plus a server whose queue is full.
fn transient(status: &Status) -> Option<RewardError> {
    if status.code() == Code::ResourceExhausted {
        return Some(RewardError::Unavailable(describe(status)));
    }
    match classify(status) {
        Failure::Unreachable => Some(RewardError::Unavailable(describe(status))),
        Failure::Timeout => Some(RewardError::Unavailable(describe(status))),
        Failure::Fatal => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_invalid_never_a_score() {
        assert_eq!(checked(vec![0.5, -1.0], 2).unwrap(), vec![0.5, -1.0]);
        for (scores, n, want) in [
            (vec![0.5], 2, "1 scores for 2"),
            (vec![0.5, 0.1, 0.2], 2, "3 scores for 2"),
            (vec![0.5, f32::NAN], 2, "NaN"),
            (vec![f32::INFINITY], 1, "inf"),
        ] {
            let e = checked(scores, n).unwrap_err();
            assert!(matches!(e, RewardError::Invalid(_)), "{e}");
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn failures_are_sorted_by_what_another_try_can_change() {
        for s in [
            Status::unavailable("refused"),
            Status::resource_exhausted("busy"),
            Status::deadline_exceeded(""),
        ] {
            assert!(transient(&s).is_some(), "{s}");
        }
        for s in [
            Status::unauthenticated("wrong token"),
            Status::invalid_argument("token 99"),
        ] {
            assert!(transient(&s).is_none(), "{s}");
        }
    }
}
