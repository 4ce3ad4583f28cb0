//! Worker threads for remote environments: an environment call blocks on the network, so it
//! runs here while the decode thread keeps decoding the other rows.

use crossbeam_channel::{Receiver, Sender};
use std::thread::Scope;
use std::time::{Duration, Instant};
use tasks::{EnvError, EnvStep, Environment, Problem};

/// Most threads one batch uses for environment calls.
const MAX_WORKERS: usize = 16;

/// A call to make on an episode's environment.
pub(super) enum Call {
    Reset(Problem, u64),
    Step(String),
    /// Release the session; nothing comes back.
    Close,
}

/// An environment's answer.
pub(super) enum Answer {
    Reset(Result<String, EnvError>),
    Step(Result<EnvStep, EnvError>),
}

/// One finished call: the episode, its environment back, the answer and how long it took.
pub(super) struct Done {
    pub episode: usize,
    pub env: Box<dyn Environment>,
    pub answer: Answer,
    pub seconds: f64,
}

/// Makes `call` on `env`, timed.
pub(super) fn make(env: &mut dyn Environment, call: Call) -> Option<(Answer, f64)> {
    let start = Instant::now();
    let answer = match call {
        Call::Reset(problem, seed) => Answer::Reset(env.reset(&problem, seed)),
        Call::Step(action) => Answer::Step(env.step(&action)),
        Call::Close => {
            env.close();
            return None;
        }
    };
    Some((answer, start.elapsed().as_secs_f64()))
}

/// The pool: calls in, answers out.
pub(super) struct Workers {
    calls: Sender<(usize, Box<dyn Environment>, Call)>,
    done: Receiver<Done>,
}

impl Workers {
    /// Up to `episodes` (at most [`MAX_WORKERS`]) threads in `scope`.
    pub fn spawn<'s>(scope: &'s Scope<'s, '_>, episodes: usize) -> Workers {
        let (calls, inbox) = crossbeam_channel::unbounded::<(usize, Box<dyn Environment>, Call)>();
        let (outbox, done) = crossbeam_channel::unbounded();
        for _ in 0..episodes.clamp(1, MAX_WORKERS) {
            let (inbox, outbox) = (inbox.clone(), outbox.clone());
            scope.spawn(move || {
                for (episode, mut env, call) in inbox {
                    if let Some((answer, seconds)) = make(env.as_mut(), call) {
                        let done = Done {
                            episode,
                            env,
                            answer,
                            seconds,
                        };
                        if outbox.send(done).is_err() {
                            return;
                        }
                    }
                }
            });
        }
        Workers { calls, done }
    }

    /// Queues a call.
    pub fn send(&self, episode: usize, env: Box<dyn Environment>, call: Call) {
        // The workers outlive the pool handle, so the queue is open while it exists.
        let _ = self.calls.send((episode, env, call));
    }

    /// An answer that is ready, or one within `wait` when given.
    pub fn receive(&self, wait: Option<Duration>) -> Option<Done> {
        match wait {
            None => self.done.try_recv().ok(),
            Some(wait) => self.done.recv_timeout(wait).ok(),
        }
    }
}
