//! The client of a remote environment: [`RemoteEnvs`] is a [`tasks::EnvFactory`] over an
//! `oxrl.v1.Environment` server, and each [`RemoteEnv`] it makes is one episode's session
//! there, used through the same [`tasks::Environment`] trait as the built-ins.
//!
//! Calls block the calling thread (the episode engine calls a remote environment from a
//! plain thread, off the decode loop) and run on the runtime the factory was given, which
//! must be a multi-threaded tokio runtime; never call them from an async task. Each call has
//! the deadline `timeout`. A failure another try may cure (the server unreachable or
//! restarting, a dropped connection, no answer in time, a server at its session cap) is
//! retried, up to `attempts` tries in all, after waits that double from 50 ms (to at most 2 s)
//! with random jitter; then it is [`EnvError::Unavailable`] or, when the last try timed out,
//! [`EnvError::Timeout`]. An answer that cannot be used is [`EnvError::Invalid`] at once,
//! never a silent zero reward: a non-finite reward, a session the server does not hold (it
//! restarted, or reaped the session), a refused token, or any other error status.
//!
//! A retried Step carries the same turn number, so a server that served the first try and
//! lost only its reply answers from its cache instead of stepping again (proto/oxrl.proto,
//! `EnvStepRequest.turn`). Close is sent in the background, best-effort: when an episode ends
//! (`done`), when the engine ends it early ([`tasks::Environment::close`]) and when a
//! [`RemoteEnv`] is dropped.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proto::environment_client::EnvironmentClient;
use proto::transport::retry::{classify, Failure, FIRST_BACKOFF, MAX_BACKOFF};
use proto::transport::{ClientChannel, Security};
use tasks::{EnvError, EnvFactory, EnvStep, Environment, Problem};
use tokio::runtime::Handle;
use tonic::{Code, Request, Response, Status};
use tracing::{debug, warn};

/// Episodes of one environment on one server: a [`tasks::EnvFactory`] whose environments
/// live across the network.
pub struct RemoteEnvs {
    link: Arc<Link>,
    /// Random per factory, so that session ids never collide between processes.
    prefix: String,
    next: AtomicU64,
}

/// What every session of a factory shares: the channel and the call policy.
struct Link {
    url: String,
    env: String,
    client: EnvironmentClient<ClientChannel>,
    timeout: Duration,
    attempts: u32,
    runtime: Handle,
}

impl RemoteEnvs {
    /// Episodes of `env` (`""`: the server's default) on the server at `url`, with the token
    /// and TLS of `security`; every call has the deadline `timeout` and is tried up to
    /// `attempts` times (at least once). The connection is opened on first use (a server may
    /// start after its clients); only the URL and TLS settings are checked here, a bad one
    /// being [`EnvError::Invalid`]. Calls run on `runtime` (multi-threaded).
    pub fn connect(
        url: &str,
        env: &str,
        security: &Security,
        timeout: Duration,
        attempts: u32,
        runtime: Handle,
    ) -> Result<Arc<RemoteEnvs>, EnvError> {
        let mut timeouts = security.timeouts();
        timeouts.connect = timeouts.connect.min(timeout);
        timeouts.request = timeout;
        let security = security.clone().with_timeouts(timeouts);
        let channel = {
            // The channel's worker task is spawned on `runtime`.
            let _entered = runtime.enter();
            security.lazy_channel(url)
        }
        .map_err(|e| EnvError::Invalid(format!("environment server {url}: {e}")))?;
        let client = EnvironmentClient::new(channel)
            .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(proto::MAX_MESSAGE_BYTES);
        Ok(Arc::new(RemoteEnvs {
            link: Arc::new(Link {
                url: url.to_string(),
                env: env.to_string(),
                client,
                timeout,
                attempts: attempts.max(1),
                runtime,
            }),
            prefix: format!("{:016x}", rand::random::<u64>()),
            next: AtomicU64::new(0),
        }))
    }

    /// The server's URL, as given.
    pub fn url(&self) -> &str {
        &self.link.url
    }

    /// A [`RemoteEnv`] with a fresh session id (what [`EnvFactory::make`] boxes).
    pub fn session(&self) -> RemoteEnv {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        RemoteEnv {
            link: self.link.clone(),
            base: format!("{}-{n}", self.prefix),
            resets: 0,
            session: None,
            turns: 0,
            done: false,
            released: true,
        }
    }
}

impl EnvFactory for RemoteEnvs {
    fn name(&self) -> &str {
        &self.link.env
    }

    fn make(&self) -> Result<Box<dyn Environment>, EnvError> {
        Ok(Box::new(self.session()))
    }
}

/// One episode's session on an environment server.
pub struct RemoteEnv {
    link: Arc<Link>,
    /// The session id of the first reset; a later reset on the same value opens `base.k`.
    base: String,
    resets: u32,
    /// The session of the current episode, once reset was called.
    session: Option<String>,
    /// Model turns answered in this episode.
    turns: u32,
    done: bool,
    /// Close has been sent for `session` (or there is none).
    released: bool,
}

impl RemoteEnv {
    /// The id of the current session (None before the first reset).
    pub fn session_id(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// Sends Close for the current session in the background, once.
    fn release(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let Some(session) = self.session.clone() else {
            return;
        };
        let link = self.link.clone();
        // On a runtime that has shut down, the task is dropped: the server's idle TTL
        // forgets the session instead.
        self.link.runtime.spawn(async move {
            let mut request = Request::new(proto::EnvCloseRequest {
                session_id: session.clone(),
            });
            request.set_timeout(link.timeout);
            let mut client = link.client.clone();
            match tokio::time::timeout(link.timeout, client.close(request)).await {
                Ok(Ok(_)) => debug!(session, "environment session closed"),
                Ok(Err(status)) => {
                    debug!(session, error = %describe(&status), "closing the environment session failed")
                }
                Err(_) => debug!(session, "closing the environment session timed out"),
            }
        });
    }
}

impl Environment for RemoteEnv {
    fn reset(&mut self, problem: &Problem, seed: u64) -> Result<String, EnvError> {
        self.release();
        let session = match self.resets {
            0 => self.base.clone(),
            k => format!("{}.{k}", self.base),
        };
        self.resets += 1;
        // Set before the call: a Reset that failed may still have opened the session.
        self.session = Some(session.clone());
        self.released = false;
        self.turns = 0;
        self.done = false;
        let request = proto::EnvResetRequest {
            session_id: session,
            env: self.link.env.clone(),
            problem_id: problem.id.clone(),
            prompt: problem.prompt.clone(),
            answer: problem.answer.clone(),
            seed,
        };
        let reply = self
            .link
            .call("Reset", &request, |mut client, request| async move {
                client.reset(request).await
            })?;
        Ok(reply.observation)
    }

    fn step(&mut self, action: &str) -> Result<EnvStep, EnvError> {
        let Some(session) = self.session.clone() else {
            return Err(EnvError::Invalid("step before reset".into()));
        };
        if self.done {
            return Err(EnvError::Invalid(format!(
                "step after the episode of session {session} ended (done) at turn {}",
                self.turns
            )));
        }
        let turn = self.turns + 1;
        let request = proto::EnvStepRequest {
            session_id: session.clone(),
            action: action.to_string(),
            turn,
        };
        let what = format!("Step (turn {turn})");
        let reply = self
            .link
            .call(&what, &request, |mut client, request| async move {
                client.step(request).await
            })?;
        if !reply.reward.is_finite() {
            return Err(EnvError::Invalid(format!(
                "{what} of session {session} on {}: reward {} (a reward must be finite)",
                self.link.url, reply.reward
            )));
        }
        self.turns = turn;
        if reply.done {
            self.done = true;
            // The server keeps the last reply for a retry until Close: it is not needed now.
            self.release();
        }
        Ok(EnvStep {
            observation: reply.observation,
            reward: reply.reward,
            done: reply.done,
        })
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn close(&mut self) {
        self.release();
    }
}

impl Drop for RemoteEnv {
    fn drop(&mut self) {
        self.release();
    }
}

/// A status as errors and logs quote it: `Unavailable: connection refused`.
fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// What one failed try says: retry it (a transient failure, described), or give up at once.
enum Failed {
    Unreachable(String),
    Timeout(String),
}

impl Link {
    /// Sends `request` through `send` until it is answered, retrying transient failures up to
    /// `attempts` tries with jittered exponential backoff; blocks the calling thread.
    fn call<Req, Rep, F, Fut>(&self, what: &str, request: &Req, send: F) -> Result<Rep, EnvError>
    where
        Req: Clone,
        F: Fn(EnvironmentClient<ClientChannel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Rep>, Status>>,
    {
        self.runtime.block_on(async {
            let mut backoff = FIRST_BACKOFF;
            let mut attempt = 1;
            loop {
                let mut message = Request::new(request.clone());
                message.set_timeout(self.timeout);
                let sent = send(self.client.clone(), message);
                let failed = match tokio::time::timeout(self.timeout, sent).await {
                    Ok(Ok(reply)) => return Ok(reply.into_inner()),
                    Ok(Err(status)) => match transient(&status) {
                        Some(failed) => failed,
                        None => return Err(self.refused(what, &status)),
                    },
                    Err(_) => Failed::Timeout(format!("no answer within {:?}", self.timeout)),
                };
                let error = match &failed {
                    Failed::Unreachable(e) | Failed::Timeout(e) => e.clone(),
                };
                if attempt >= self.attempts {
                    warn!(
                        url = %self.url, call = what, attempts = attempt, %error,
                        "the environment server did not answer; giving up"
                    );
                    return Err(match failed {
                        Failed::Timeout(_) => {
                            EnvError::Timeout(self.timeout.as_millis().min(u64::MAX as u128) as u64)
                        }
                        Failed::Unreachable(e) => EnvError::Unavailable(format!(
                            "{what} on {}: no answer after {attempt} attempts; last: {e}",
                            self.url
                        )),
                    });
                }
                let wait = backoff.mul_f64(0.5 + 0.5 * rand::random::<f64>());
                debug!(
                    url = %self.url, call = what, attempt, %error, retry_in = ?wait,
                    "environment call failed; retrying"
                );
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                attempt += 1;
            }
        })
    }

    /// The error for an answer another try would get again.
    fn refused(&self, what: &str, status: &Status) -> EnvError {
        let hint = match status.code() {
            Code::Unauthenticated => {
                " (the server wants another token: give it the same --auth-token-file or \
                 OXRL_AUTH_TOKEN as the environment server)"
            }
            _ => "",
        };
        EnvError::Invalid(format!(
            "{what} on {}: {}{hint}",
            self.url,
            describe(status)
        ))
    }
}

/// A failure worth another try, or None for one that is not: the shared classification
/// (`proto::transport::retry::classify`), plus a server at its session cap, which frees
/// slots as episodes end.
fn transient(status: &Status) -> Option<Failed> {
    if status.code() == Code::ResourceExhausted {
        return Some(Failed::Unreachable(describe(status)));
    }
    match classify(status) {
        Failure::Unreachable => Some(Failed::Unreachable(describe(status))),
        Failure::Timeout => Some(Failed::Timeout(describe(status))),
        Failure::Fatal => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_sorted_by_what_another_try_can_change() {
        let transient_codes = [
            Status::unavailable("refused"),
            Status::resource_exhausted("full"),
            Status::unknown("reset"),
        ];
        for s in transient_codes {
            assert!(matches!(transient(&s), Some(Failed::Unreachable(_))), "{s}");
        }
        for s in [
            Status::deadline_exceeded(""),
            Status::cancelled("Timeout expired"),
        ] {
            assert!(matches!(transient(&s), Some(Failed::Timeout(_))), "{s}");
        }
        for s in [
            Status::unauthenticated("wrong token"),
            Status::not_found("session"),
            Status::invalid_argument(""),
            Status::failed_precondition(""),
        ] {
            assert!(transient(&s).is_none(), "{s}");
        }
    }

    #[test]
    fn a_bad_url_is_invalid_at_once() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let err = RemoteEnvs::connect(
            "ftp://h:1",
            "guess",
            &Security::default(),
            Duration::from_secs(1),
            3,
            rt.handle().clone(),
        )
        .err()
        .unwrap();
        assert!(matches!(err, EnvError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("ftp://h:1"), "{err}");
    }
}
