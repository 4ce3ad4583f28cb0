//! What a client gets when an environment server fails, always within a bounded time and
//! never as a silent zero reward: a server killed mid-episode is `Unavailable` after the
//! attempts; one that accepts connections and never answers is `Timeout` after attempts x
//! deadline; a session the server no longer holds (restarted, or idled out) and a non-finite
//! reward are `Invalid` at once.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{builtins, client_runtime, connect, guess_problem, wait_until, Served};
use environment::Limits;
use proto::environment_server::{Environment as EnvironmentService, EnvironmentServer};
use proto::transport::Security;
use tasks::{EnvError, EnvFactory};
use tonic::{Request, Response, Status};

#[test]
fn a_server_killed_mid_episode_is_unavailable_after_the_attempts() {
    let mut served = Served::start(builtins(&["guess"], Limits::default()), Security::default());
    let rt = client_runtime();
    let envs = connect(
        &served.url(),
        "guess",
        &Security::default(),
        Duration::from_secs(2),
        4,
        &rt,
    );
    let mut env = envs.make().unwrap();
    env.reset(&guess_problem(4, 0), 0).unwrap();
    env.step("x").unwrap();
    served.kill();
    let started = Instant::now();
    let err = env.step("5").unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, EnvError::Unavailable(_)), "{err}");
    assert_eq!(err.reason(), "env_unavailable");
    assert!(err.to_string().contains("4 attempts"), "{err}");
    // Three waits of at most 50, 100 and 200 ms between four refused connections.
    assert!(took < Duration::from_secs(5), "gave up after {took:?}");
}

#[test]
fn a_server_that_never_answers_times_out_after_attempts_times_the_deadline() {
    // Takes connections (the kernel completes the handshake) and never says a word.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", hung.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hung.incoming() {
            held.push(stream);
        }
    });
    let rt = client_runtime();
    let timeout = Duration::from_millis(300);
    let attempts = 3;
    let envs = connect(&url, "guess", &Security::default(), timeout, attempts, &rt);
    let started = Instant::now();
    let err = envs
        .make()
        .unwrap()
        .reset(&guess_problem(4, 0), 0)
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err, EnvError::Timeout(300));
    assert_eq!(err.reason(), "env_timeout");
    assert!(took >= timeout * attempts, "gave up after {took:?}");
    assert!(
        took < timeout * attempts + Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn a_session_the_server_lost_is_invalid() {
    // Restarted on the same port: the new server holds none of the old one's sessions.
    let mut served = Served::start(builtins(&["guess"], Limits::default()), Security::default());
    let rt = client_runtime();
    let envs = connect(
        &served.url(),
        "guess",
        &Security::default(),
        Duration::from_secs(2),
        20,
        &rt,
    );
    let mut env = envs.make().unwrap();
    env.reset(&guess_problem(4, 0), 0).unwrap();
    let addr = served.addr.to_string();
    served.kill();
    let _restarted = Served::start_at(
        &addr,
        builtins(&["guess"], Limits::default()),
        Security::default(),
    );
    let err = env.step("3").unwrap_err();
    assert!(matches!(err, EnvError::Invalid(_)), "{err}");
    assert!(
        err.to_string().contains("NotFound") && err.to_string().contains("restarted"),
        "{err}"
    );
}

#[test]
fn an_idle_session_is_reaped_and_then_invalid() {
    let limits = Limits {
        max_sessions: 8,
        idle_ttl: Duration::from_millis(200),
    };
    let served = Served::start(builtins(&["guess"], limits), Security::default());
    let rt = client_runtime();
    let envs = connect(
        &served.url(),
        "guess",
        &Security::default(),
        Duration::from_secs(2),
        3,
        &rt,
    );
    let mut env = envs.make().unwrap();
    env.reset(&guess_problem(4, 0), 0).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || served.server.sessions_held()
            == 0),
        "the idle session was never reaped"
    );
    let err = env.step("3").unwrap_err();
    assert!(matches!(err, EnvError::Invalid(_)), "{err}");
    assert!(served
        .server
        .render_metrics()
        .contains("oxrl_env_reaped_sessions_total 1"));
}

#[test]
fn a_full_server_is_retried_then_unavailable() {
    let limits = Limits {
        max_sessions: 1,
        idle_ttl: Duration::from_secs(60),
    };
    let served = Served::start(builtins(&["guess"], limits), Security::default());
    let rt = client_runtime();
    let envs = connect(
        &served.url(),
        "guess",
        &Security::default(),
        Duration::from_secs(2),
        2,
        &rt,
    );
    let mut first = envs.make().unwrap();
    first.reset(&guess_problem(4, 0), 0).unwrap();
    let err = envs
        .make()
        .unwrap()
        .reset(&guess_problem(4, 1), 0)
        .unwrap_err();
    assert!(matches!(err, EnvError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("--max-sessions"), "{err}");
}

/// A server that answers every call, with a reward that is not a number.
struct NanReward;

#[tonic::async_trait]
impl EnvironmentService for NanReward {
    async fn reset(
        &self,
        _: Request<proto::EnvResetRequest>,
    ) -> Result<Response<proto::EnvResetReply>, Status> {
        Ok(Response::new(proto::EnvResetReply {
            observation: "go:".into(),
        }))
    }
    async fn step(
        &self,
        _: Request<proto::EnvStepRequest>,
    ) -> Result<Response<proto::EnvStepReply>, Status> {
        Ok(Response::new(proto::EnvStepReply {
            observation: String::new(),
            reward: f32::NAN,
            done: true,
        }))
    }
    async fn close(
        &self,
        _: Request<proto::EnvCloseRequest>,
    ) -> Result<Response<proto::EnvCloseReply>, Status> {
        Ok(Response::new(proto::EnvCloseReply {}))
    }
}

#[test]
fn a_non_finite_reward_is_invalid() {
    let server_rt = client_runtime();
    let listener = server_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    server_rt.spawn(
        tonic::transport::Server::builder()
            .add_service(EnvironmentServer::new(NanReward))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let rt = client_runtime();
    let envs = connect(
        &url,
        "",
        &Security::default(),
        Duration::from_secs(2),
        3,
        &rt,
    );
    let mut env = envs.make().unwrap();
    assert_eq!(env.reset(&guess_problem(4, 0), 0).unwrap(), "go:");
    let err = env.step("1").unwrap_err();
    assert!(matches!(err, EnvError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("reward NaN"), "{err}");
}
