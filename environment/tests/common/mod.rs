//! Helpers shared by the environment tests: a server started in-process on port 0 in a
//! runtime of its own (so a test can kill it, sockets and all, as a crashed process would
//! be), the client's runtime, a guess-the-number problem and a player that bisects it, and
//! waiting on a condition with a deadline.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use environment::{EnvServer, Limits, RemoteEnvs};
use proto::transport::Security;
use tasks::{Environment, NumericVerifier, Problem, Split};
use tokio::runtime::Runtime;

/// A runtime for clients: `RemoteEnv` calls block a plain thread and run on it.
pub fn client_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A server of the built-ins `names` (scored by `numeric`).
pub fn builtins(names: &[&str], limits: Limits) -> EnvServer {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    EnvServer::builtins(&names, Arc::new(NumericVerifier), limits).unwrap()
}

/// A server running on its own runtime, listening on loopback.
pub struct Served {
    pub addr: SocketAddr,
    pub server: EnvServer,
    runtime: Option<Runtime>,
}

impl Served {
    /// Serves `server` on 127.0.0.1, port 0, with `security`.
    pub fn start(server: EnvServer, security: Security) -> Served {
        Served::start_at("127.0.0.1:0", server, security)
    }

    /// Serves `server` on `addr` (a restarted server takes its predecessor's port).
    pub fn start_at(addr: &str, server: EnvServer, security: Security) -> Served {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = server.clone();
        runtime.spawn(async move {
            serving
                .serve(listener, security, std::future::pending())
                .await
                .unwrap();
        });
        Served {
            addr,
            server,
            runtime: Some(runtime),
        }
    }

    /// `http://` and its address.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it as a crash would: every task dropped, every socket closed, no goodbye.
    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A client of `url`'s `env` with the call policy of a test: short deadline, few attempts.
pub fn connect(
    url: &str,
    env: &str,
    security: &Security,
    timeout: Duration,
    attempts: u32,
    runtime: &Runtime,
) -> Arc<RemoteEnvs> {
    RemoteEnvs::connect(
        url,
        env,
        security,
        timeout,
        attempts,
        runtime.handle().clone(),
    )
    .unwrap()
}

/// A guess-the-number problem of the `guess` task (a range of 2^bits numbers).
pub fn guess_problem(bits: u32, index: u64) -> Problem {
    tasks::builtin("guess", Some(bits), 7)
        .unwrap()
        .problem(Split::Train, index)
}

/// Plays `problem` (`guess LO-HI:`) by bisection to the end; returns (turns, reward).
pub fn play_guess(env: &mut dyn Environment, problem: &Problem) -> (u32, f32) {
    let observation = env.reset(problem, 0).unwrap();
    assert_eq!(observation, problem.prompt);
    let range = observation
        .trim_start_matches("guess ")
        .trim_end_matches(':');
    let (lo, hi) = range.split_once('-').unwrap();
    let (mut lo, mut hi): (i64, i64) = (lo.parse().unwrap(), hi.parse().unwrap());
    let mut turns = 0;
    loop {
        assert!(lo <= hi, "the range closed without a find");
        let guess = (lo + hi) / 2;
        let step = env.step(&guess.to_string()).unwrap();
        turns += 1;
        if step.done {
            return (turns, step.reward);
        }
        assert_eq!(step.reward, 0.0);
        match step.observation.as_str() {
            " hi:" => lo = guess + 1,
            " lo:" => hi = guess - 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
}

/// Waits until `condition` holds, polling, up to `deadline`; false if it never did.
pub fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
