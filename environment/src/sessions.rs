//! The sessions an environment server holds, behind one owner: [`Sessions`] maps session ids
//! to episodes, enforces the cap on open sessions, forgets idle ones ([`Sessions::reap`]) and
//! remembers each session's last (turn, reply), so that a retried Step is answered without
//! stepping the environment twice.
//!
//! Plain synchronous logic over an explicit `now`, so the rules are tested without a server
//! or a clock; the service runs each call on a blocking thread (an environment's `step` may
//! take its time), where these locks are taken. Locks: the table's lock is held only to find,
//! insert or remove an entry, never while an environment runs; a session's own lock is held
//! while its environment resets or steps, so calls on one session run one at a time (a retry
//! that arrives while the first call still runs waits for it, then finds its reply cached).
//! The one place both are held, the table's is taken first ([`Sessions::reset`] locks a
//! session no one else can see yet; [`Sessions::reap`] only tries a session's lock).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use tasks::{EnvError, EnvFactory, EnvStep, Environment, Problem};

/// How many sessions a server holds open, and for how long one may sit idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open sessions (reset, not yet done, closed or reaped) at most; a Reset past it is
    /// refused with RESOURCE_EXHAUSTED.
    pub max_sessions: usize,
    /// A session no call has touched for this long is forgotten (its client is gone).
    pub idle_ttl: Duration,
}

/// Default [`Limits::max_sessions`].
pub const DEFAULT_MAX_SESSIONS: usize = 4096;
/// Default [`Limits::idle_ttl`].
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(600);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: DEFAULT_MAX_SESSIONS,
            idle_ttl: DEFAULT_IDLE_TTL,
        }
    }
}

/// Why a session call was refused; the service maps each to a gRPC status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    /// The request itself is malformed (an empty session id).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Reset named an environment this server does not run.
    #[error("unknown environment {name:?}: this server runs {known}")]
    UnknownEnv { name: String, known: String },
    /// The cap on open sessions is reached.
    #[error(
        "{max} sessions are open, the most this server holds (--max-sessions): close \
         finished sessions, or retry later"
    )]
    Full { max: usize },
    /// Step named a session this server does not hold.
    #[error(
        "session {session:?} is not open on this server: it was never reset, was closed, \
         idled out, or the server restarted (its episode cannot go on)"
    )]
    UnknownSession { session: String },
    /// Reset named a session that is already open on another problem, or already stepped.
    #[error(
        "session {session:?} is already open (on problem {problem:?}, {turns} turns taken): \
         a session id names one episode"
    )]
    SessionReused {
        session: String,
        problem: String,
        turns: u32,
    },
    /// Step's turn is neither the last one served (a retry) nor the next.
    #[error(
        "session {session:?} got turn {turn} after {served} turns: send turn {} next, or \
         {served} again to repeat the last reply",
        served + 1
    )]
    TurnOutOfOrder {
        session: String,
        turn: u32,
        served: u32,
    },
    /// Step after the episode ended (`done`).
    #[error("session {session:?} ended (done) after {turns} turns: no turn {turn}")]
    Ended {
        session: String,
        turns: u32,
        turn: u32,
    },
    /// The environment itself failed (e.g. a problem it cannot play).
    #[error("environment {env}: {error}")]
    Env { env: String, error: EnvError },
    /// A bug or a panic in an environment (a poisoned lock).
    #[error("internal error: {0}")]
    Internal(String),
}

impl SessionError {
    /// The `reason` label of `oxrl_env_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            SessionError::InvalidRequest(_) => "invalid_request",
            SessionError::UnknownEnv { .. } => "unknown_env",
            SessionError::Full { .. } => "session_limit",
            SessionError::UnknownSession { .. } => "unknown_session",
            SessionError::SessionReused { .. } => "session_reused",
            SessionError::TurnOutOfOrder { .. } => "turn_out_of_order",
            SessionError::Ended { .. } => "episode_ended",
            SessionError::Env { .. } => "env_error",
            SessionError::Internal(_) => "internal",
        }
    }
}

/// What a Reset asks for: a session id, the environment (`""` = the server's default) and the
/// leased problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Opening {
    pub session: String,
    pub env: String,
    pub problem: Problem,
    pub seed: u64,
}

/// A Step's answer, and whether it came from the turn cache.
#[derive(Debug, Clone, PartialEq)]
pub struct Stepped {
    pub step: EnvStep,
    /// The turn was the last one served: its reply was repeated, the environment not stepped.
    pub replayed: bool,
    /// The environment that answered (for metrics).
    pub env: String,
}

/// Where one session's episode stands.
enum Phase {
    /// Its Reset is running (the session's lock is held meanwhile).
    Opening,
    Open(Box<dyn Environment>),
    /// Its Reset failed; it was removed from the table. A retried Reset that waited on it
    /// gets the same error.
    Failed(SessionError),
    /// The episode is over (`done`): the environment is dropped, the last reply kept for a
    /// retried Step until the client closes the session or it idles out.
    Done,
    /// Closed or reaped while a call that had found it was waiting for its lock.
    Gone,
}

struct Session {
    env: String,
    problem_id: String,
    observation: String,
    phase: Phase,
    /// Turns served.
    turns: u32,
    /// The last turn served and its reply.
    last: Option<(u32, EnvStep)>,
    last_used: Instant,
}

impl Session {
    fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Opening | Phase::Open(_))
    }
}

type Shared = Arc<Mutex<Session>>;

/// Every session of one server, the environments it runs, and its limits.
pub struct Sessions {
    /// The environments by name; the first is the default (`env = ""`).
    envs: Vec<Arc<dyn EnvFactory>>,
    limits: Limits,
    table: Mutex<HashMap<String, Shared>>,
    /// Sessions whose phase is Opening or Open, in the table or not (each leaves that phase
    /// once, under its own lock, and is uncounted there).
    open: AtomicUsize,
}

fn poisoned(what: &str) -> SessionError {
    SessionError::Internal(format!(
        "{what} lock poisoned: an environment panicked; see the server's log"
    ))
}

impl Sessions {
    /// A table over `envs` (the first is the default; at least one).
    pub fn new(envs: Vec<Arc<dyn EnvFactory>>, limits: Limits) -> Sessions {
        Sessions {
            envs,
            limits,
            table: Mutex::new(HashMap::new()),
            open: AtomicUsize::new(0),
        }
    }

    /// The names of the environments served, the default first.
    pub fn env_names(&self) -> Vec<String> {
        self.envs.iter().map(|f| f.name().to_string()).collect()
    }

    /// Sessions open now (reset, not yet done, closed or reaped).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Sessions held now: the open ones and finished ones kept for a retried last Step.
    pub fn held(&self) -> usize {
        // Reading the length of a poisoned table is safe: no entry is half-written.
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn table(&self) -> Result<MutexGuard<'_, HashMap<String, Shared>>, SessionError> {
        self.table.lock().map_err(|_| poisoned("session table"))
    }

    fn find(&self, session: &str) -> Result<Shared, SessionError> {
        self.table()?
            .get(session)
            .cloned()
            .ok_or_else(|| SessionError::UnknownSession {
                session: session.to_string(),
            })
    }

    fn factory(&self, env: &str) -> Result<&Arc<dyn EnvFactory>, SessionError> {
        let found = if env.is_empty() {
            self.envs.first()
        } else {
            self.envs.iter().find(|f| f.name() == env)
        };
        found.ok_or_else(|| SessionError::UnknownEnv {
            name: env.to_string(),
            known: self.env_names().join(", "),
        })
    }

    /// Leaves the open phase (once per session, under its lock).
    fn uncount(&self, session: &Session) {
        if session.is_open() {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Opens `opening.session` on its problem and returns the first observation. A repeated
    /// Reset of a session not yet stepped, on the same problem, returns the same observation.
    pub fn reset(&self, opening: Opening, now: Instant) -> Result<String, SessionError> {
        if opening.session.is_empty() {
            return Err(SessionError::InvalidRequest(
                "session_id is empty: the client names each episode's session".into(),
            ));
        }
        let factory = self.factory(&opening.env)?;
        let env_name = factory.name().to_string();
        let mut table = self.table()?;
        if let Some(existing) = table.get(&opening.session).cloned() {
            drop(table);
            return self.reset_again(&existing, &opening, now);
        }
        if self.open.load(Ordering::Relaxed) >= self.limits.max_sessions {
            return Err(SessionError::Full {
                max: self.limits.max_sessions,
            });
        }
        let shared = Arc::new(Mutex::new(Session {
            env: env_name.clone(),
            problem_id: opening.problem.id.clone(),
            observation: String::new(),
            phase: Phase::Opening,
            turns: 0,
            last: None,
            last_used: now,
        }));
        // No one else can see this session yet: its lock is free, and held from before it is
        // published until its environment is reset, so a concurrent retry waits for that.
        let mut session = shared.lock().map_err(|_| poisoned("new session"))?;
        table.insert(opening.session.clone(), shared.clone());
        self.open.fetch_add(1, Ordering::Relaxed);
        drop(table);

        let opened = factory.make().and_then(|mut env| {
            let observation = env.reset(&opening.problem, opening.seed)?;
            Ok((env, observation))
        });
        match opened {
            Ok((env, observation)) => {
                session.observation = observation.clone();
                session.phase = Phase::Open(env);
                Ok(observation)
            }
            Err(error) => {
                let error = SessionError::Env {
                    env: env_name,
                    error,
                };
                self.uncount(&session);
                session.phase = Phase::Failed(error.clone());
                drop(session);
                self.table()?.remove(&opening.session);
                Err(error)
            }
        }
    }

    /// A Reset of a session already in the table: a retry, or a mistake.
    fn reset_again(
        &self,
        shared: &Shared,
        opening: &Opening,
        now: Instant,
    ) -> Result<String, SessionError> {
        let mut session = shared.lock().map_err(|_| poisoned("session"))?;
        match &session.phase {
            Phase::Failed(error) => return Err(error.clone()),
            Phase::Gone => {
                return Err(SessionError::UnknownSession {
                    session: opening.session.clone(),
                })
            }
            Phase::Opening | Phase::Open(_) | Phase::Done => {}
        }
        if session.problem_id != opening.problem.id || session.turns > 0 {
            return Err(SessionError::SessionReused {
                session: opening.session.clone(),
                problem: session.problem_id.clone(),
                turns: session.turns,
            });
        }
        session.last_used = now;
        Ok(session.observation.clone())
    }

    /// Answers `turn` (1-based; 0 = unnumbered, always stepped) of `session` with `action`.
    pub fn step(
        &self,
        session_id: &str,
        turn: u32,
        action: &str,
        now: Instant,
    ) -> Result<Stepped, SessionError> {
        let shared = self.find(session_id)?;
        let mut session = shared.lock().map_err(|_| poisoned("session"))?;
        session.last_used = now;
        let env_name = session.env.clone();
        if let Some((last, reply)) = &session.last {
            if turn != 0 && turn == *last {
                return Ok(Stepped {
                    step: reply.clone(),
                    replayed: true,
                    env: env_name,
                });
            }
        }
        let served = session.turns;
        let turn = match turn {
            0 => served + 1,
            t if t == served + 1 => t,
            t => {
                return Err(SessionError::TurnOutOfOrder {
                    session: session_id.to_string(),
                    turn: t,
                    served,
                })
            }
        };
        let step = match &mut session.phase {
            Phase::Open(env) => env.step(action).map_err(|error| SessionError::Env {
                env: env_name.clone(),
                error,
            })?,
            Phase::Done => {
                return Err(SessionError::Ended {
                    session: session_id.to_string(),
                    turns: served,
                    turn,
                })
            }
            Phase::Opening | Phase::Failed(_) | Phase::Gone => {
                return Err(SessionError::UnknownSession {
                    session: session_id.to_string(),
                })
            }
        };
        session.turns = turn;
        session.last = Some((turn, step.clone()));
        if step.done {
            self.uncount(&session);
            session.phase = Phase::Done;
        }
        Ok(Stepped {
            step,
            replayed: false,
            env: env_name,
        })
    }

    /// Ends `session` (its environment is dropped); closing one that is not held is no error.
    pub fn close(&self, session_id: &str) -> Result<(), SessionError> {
        let removed = self.table()?.remove(session_id);
        if let Some(shared) = removed {
            // A poisoned session is closed all the same: its phase is still readable.
            let mut session = shared.lock().unwrap_or_else(|e| e.into_inner());
            self.uncount(&session);
            session.phase = Phase::Gone;
        }
        Ok(())
    }

    /// Forgets every session idle for longer than the TTL at `now` (a session busy in a call
    /// is not idle); returns how many.
    pub fn reap(&self, now: Instant) -> Result<usize, SessionError> {
        let ttl = self.limits.idle_ttl;
        let mut table = self.table()?;
        let before = table.len();
        table.retain(|_, shared| {
            let mut session = match shared.try_lock() {
                Ok(session) => session,
                Err(TryLockError::WouldBlock) => return true,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
            };
            if now.saturating_duration_since(session.last_used) < ttl {
                return true;
            }
            self.uncount(&session);
            session.phase = Phase::Gone;
            false
        });
        Ok(before - table.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Counts the steps its environments take, and answers `turn N` (done at `done_at`).
    struct Counting {
        steps: Arc<AtomicU32>,
        done_at: u32,
    }

    struct CountingEnv {
        steps: Arc<AtomicU32>,
        taken: u32,
        done_at: u32,
    }

    impl EnvFactory for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        fn make(&self) -> Result<Box<dyn Environment>, EnvError> {
            Ok(Box::new(CountingEnv {
                steps: self.steps.clone(),
                taken: 0,
                done_at: self.done_at,
            }))
        }
    }

    impl Environment for CountingEnv {
        fn reset(&mut self, problem: &Problem, _seed: u64) -> Result<String, EnvError> {
            if problem.answer == "unplayable" {
                return Err(EnvError::Invalid("cannot play this".into()));
            }
            Ok(format!("start {}", problem.prompt))
        }
        fn step(&mut self, action: &str) -> Result<EnvStep, EnvError> {
            self.steps.fetch_add(1, Ordering::SeqCst);
            self.taken += 1;
            Ok(EnvStep {
                observation: format!("turn {} {action}", self.taken),
                reward: if self.taken == self.done_at { 1.0 } else { 0.0 },
                done: self.taken == self.done_at,
            })
        }
    }

    fn sessions(max: usize, done_at: u32) -> (Sessions, Arc<AtomicU32>) {
        let steps = Arc::new(AtomicU32::new(0));
        let limits = Limits {
            max_sessions: max,
            idle_ttl: Duration::from_secs(10),
        };
        let envs: Vec<Arc<dyn EnvFactory>> = vec![Arc::new(Counting {
            steps: steps.clone(),
            done_at,
        })];
        (Sessions::new(envs, limits), steps)
    }

    fn opening(session: &str, problem: &str) -> Opening {
        Opening {
            session: session.into(),
            env: String::new(),
            problem: Problem {
                id: problem.into(),
                prompt: "p".into(),
                answer: "a".into(),
                solution: String::new(),
            },
            seed: 0,
        }
    }

    #[test]
    fn a_repeated_turn_is_answered_from_the_cache() {
        let (s, steps) = sessions(4, 3);
        let t0 = Instant::now();
        assert_eq!(s.reset(opening("a", "p1"), t0).unwrap(), "start p");
        let first = s.step("a", 1, "x", t0).unwrap();
        assert!(!first.replayed);
        let again = s.step("a", 1, "ignored", t0).unwrap();
        assert!(again.replayed);
        assert_eq!(again.step, first.step);
        assert_eq!(steps.load(Ordering::SeqCst), 1, "stepped once");
        assert_eq!(
            s.step("a", 2, "y", t0).unwrap().step.observation,
            "turn 2 y"
        );
        let err = s.step("a", 1, "x", t0).unwrap_err();
        assert!(matches!(
            err,
            SessionError::TurnOutOfOrder {
                turn: 1,
                served: 2,
                ..
            }
        ));
        let err = s.step("a", 5, "x", t0).unwrap_err();
        assert!(err.to_string().contains("send turn 3 next"), "{err}");
        // Unnumbered turns always step.
        let done = s.step("a", 0, "z", t0).unwrap();
        assert!(done.step.done);
        assert_eq!(steps.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn the_last_reply_outlives_the_episode_until_close() {
        let (s, _) = sessions(1, 1);
        let t0 = Instant::now();
        s.reset(opening("a", "p"), t0).unwrap();
        assert_eq!(s.open(), 1);
        assert!(s.step("a", 1, "x", t0).unwrap().step.done);
        assert_eq!(s.open(), 0, "a finished episode frees its slot");
        assert!(s.step("a", 1, "x", t0).unwrap().replayed);
        assert!(matches!(
            s.step("a", 2, "x", t0),
            Err(SessionError::Ended { turns: 1, .. })
        ));
        s.reset(opening("b", "p"), t0).unwrap();
        s.close("a").unwrap();
        s.close("a").unwrap();
        assert!(matches!(
            s.step("a", 1, "x", t0),
            Err(SessionError::UnknownSession { .. })
        ));
    }

    #[test]
    fn resets_are_idempotent_capped_and_checked() {
        let (s, _) = sessions(2, 9);
        let t0 = Instant::now();
        s.reset(opening("a", "p1"), t0).unwrap();
        assert_eq!(s.reset(opening("a", "p1"), t0).unwrap(), "start p");
        assert_eq!(s.open(), 1, "a retried reset opens nothing");
        assert!(matches!(
            s.reset(opening("a", "p2"), t0),
            Err(SessionError::SessionReused { .. })
        ));
        s.step("a", 1, "x", t0).unwrap();
        assert!(matches!(
            s.reset(opening("a", "p1"), t0),
            Err(SessionError::SessionReused { turns: 1, .. })
        ));
        s.reset(opening("b", "p1"), t0).unwrap();
        let full = s.reset(opening("c", "p1"), t0).unwrap_err();
        assert_eq!(full, SessionError::Full { max: 2 });
        assert_eq!(full.reason(), "session_limit");
        s.close("b").unwrap();
        s.reset(opening("c", "p1"), t0).unwrap();
        let unknown = s
            .reset(
                Opening {
                    env: "chess".into(),
                    ..opening("d", "p")
                },
                t0,
            )
            .unwrap_err();
        assert!(unknown.to_string().contains("counting"), "{unknown}");
        assert!(matches!(
            s.reset(opening("", "p"), t0),
            Err(SessionError::InvalidRequest(_))
        ));
    }

    #[test]
    fn a_failed_reset_leaves_nothing_open() {
        let (s, _) = sessions(1, 9);
        let t0 = Instant::now();
        let mut bad = opening("a", "p");
        bad.problem.answer = "unplayable".into();
        let err = s.reset(bad, t0).unwrap_err();
        assert_eq!(err.reason(), "env_error");
        assert!(err.to_string().contains("cannot play this"), "{err}");
        assert_eq!((s.open(), s.held()), (0, 0));
        s.reset(opening("a", "p"), t0).unwrap();
    }

    #[test]
    fn idle_sessions_are_reaped() {
        let (s, _) = sessions(4, 9);
        let t0 = Instant::now();
        s.reset(opening("old", "p"), t0).unwrap();
        s.reset(opening("busy", "p"), t0).unwrap();
        s.step("busy", 1, "x", t0 + Duration::from_secs(8)).unwrap();
        assert_eq!(s.reap(t0 + Duration::from_secs(9)).unwrap(), 0);
        assert_eq!(s.reap(t0 + Duration::from_secs(11)).unwrap(), 1);
        assert_eq!((s.open(), s.held()), (1, 1));
        assert!(matches!(
            s.step("old", 1, "x", t0),
            Err(SessionError::UnknownSession { .. })
        ));
        assert_eq!(s.reap(t0 + Duration::from_secs(19)).unwrap(), 1);
        assert_eq!(s.open(), 0);
    }
}
