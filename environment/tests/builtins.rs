//! The built-in environments served end to end: a loopback server on port 0, episodes played
//! through `RemoteEnvs` as the episode engine plays them (guess-the-number to done, a
//! calculator call answered and the final answer scored), the default environment for
//! `env = ""`, sessions released when episodes end, and the server's metrics.

mod common;

use std::time::Duration;

use common::{builtins, client_runtime, connect, guess_problem, play_guess, wait_until, Served};
use environment::Limits;
use proto::transport::Security;
use tasks::{EnvFactory, Problem};

const TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn guess_is_played_to_done_over_the_network() {
    let served = Served::start(builtins(&["guess"], Limits::default()), Security::default());
    let rt = client_runtime();
    let envs = connect(
        &served.url(),
        "guess",
        &Security::default(),
        TIMEOUT,
        3,
        &rt,
    );
    assert_eq!(envs.name(), "guess");
    for index in 0..4 {
        let problem = guess_problem(4, index);
        let mut env = envs.make().unwrap();
        assert!(env.is_remote());
        let (turns, reward) = play_guess(env.as_mut(), &problem);
        assert_eq!(reward, 1.0);
        assert!(
            (1..=5).contains(&turns),
            "bisection of 16 numbers took {turns}"
        );
        let step_after = env.step("1").unwrap_err();
        assert_eq!(step_after.reason(), "env_invalid", "{step_after}");
    }
    // Each episode's Close went out in the background when it ended.
    assert!(
        wait_until(Duration::from_secs(10), || served.server.sessions_held()
            == 0),
        "{} sessions still held",
        served.server.sessions_held()
    );
    let metrics = served.server.render_metrics();
    for want in [
        "oxrl_env_resets_total{env=\"guess\"} 4",
        "oxrl_env_sessions_open 0",
    ] {
        assert!(metrics.contains(want), "{want} missing from\n{metrics}");
    }
}

#[test]
fn a_calculator_call_is_answered_and_the_answer_scored() {
    // `env = ""` is the server's default: its first environment.
    let served = Served::start(
        builtins(&["calculator", "guess"], Limits::default()),
        Security::default(),
    );
    let rt = client_runtime();
    let envs = connect(&served.url(), "", &Security::default(), TIMEOUT, 3, &rt);
    let problem = Problem {
        id: "multiplication-2/train/0".into(),
        prompt: "37*48=".into(),
        answer: "1776".into(),
        solution: "1776".into(),
    };
    let mut env = envs.make().unwrap();
    assert_eq!(env.reset(&problem, 0).unwrap(), "37*48=");
    let call = env.step("[37*48]").unwrap();
    assert_eq!(
        (call.observation.as_str(), call.reward, call.done),
        ("=1776;", 0.0, false)
    );
    let answer = env.step("1776").unwrap();
    assert_eq!((answer.reward, answer.done), (1.0, true));

    // A second episode on the same environment, ended early by the engine.
    let mut early = envs.make().unwrap();
    early.reset(&problem, 0).unwrap();
    early.step("[1+1]").unwrap();
    assert_eq!(served.server.sessions_open(), 1);
    early.close();
    assert!(
        wait_until(Duration::from_secs(10), || served.server.sessions_open()
            == 0),
        "close did not release the session"
    );
    assert!(early.step("2").is_err(), "no step on a closed session");
    let metrics = served.server.render_metrics();
    assert!(
        metrics.contains("oxrl_env_steps_total{env=\"calculator\"} 3"),
        "{metrics}"
    );
}

#[test]
fn a_named_environment_the_server_does_not_run_is_invalid() {
    let served = Served::start(builtins(&["guess"], Limits::default()), Security::default());
    let rt = client_runtime();
    let envs = connect(
        &served.url(),
        "chess",
        &Security::default(),
        TIMEOUT,
        3,
        &rt,
    );
    let err = envs
        .make()
        .unwrap()
        .reset(&guess_problem(4, 0), 0)
        .unwrap_err();
    assert_eq!(err.reason(), "env_invalid", "{err}");
    assert!(
        err.to_string().contains("chess") && err.to_string().contains("guess"),
        "{err}"
    );
}
