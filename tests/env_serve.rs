//! `oxrl env serve` as a user runs it: the binary serves a built-in on port 0, prints its
//! `OXRL_LISTENING` (and `OXRL_METRICS`) line, answers gRPC health without the token, and a
//! game of guess-the-number is played to the end through `environment::RemoteEnvs` with the
//! token; its `/metrics` counts it.

mod common;

use std::time::Duration;

use common::{http_get_as, metric, oxrl_unchecked, RoleProcess};
use environment::RemoteEnvs;
use proto::transport::{AuthToken, Security};
use tasks::{EnvFactory, Split};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const TOKEN: &str = "env-serve-test-token-42";

#[test]
fn env_serve_plays_guess_through_remote_envs() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = RoleProcess::start_with_env(
        &[
            "env",
            "serve",
            "--builtin",
            "guess",
            "--builtin",
            "calculator",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &[("OXRL_AUTH_TOKEN", TOKEN)],
        &dir.path().join("env.log"),
        true,
    );
    let url = server.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let health = rt.block_on(async {
        let channel = Security::default().channel(&url).await.unwrap();
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: "oxrl.v1.Environment".into(),
            })
            .await
            .unwrap()
            .into_inner()
    });
    assert_eq!(health.status, 1, "SERVING");

    let security = Security::default().with_token(AuthToken::parse(TOKEN, "test").unwrap());
    let envs = RemoteEnvs::connect(
        &url,
        "guess",
        &security,
        Duration::from_secs(10),
        3,
        rt.handle().clone(),
    )
    .unwrap();
    let problem = tasks::builtin("guess", Some(4), 3)
        .unwrap()
        .problem(Split::Train, 0);
    let mut env = envs.make().unwrap();
    let observation = env.reset(&problem, 0).unwrap();
    assert_eq!(observation, problem.prompt);
    // `guess LO-HI:`, bisected.
    let (lo, hi) = observation
        .trim_start_matches("guess ")
        .trim_end_matches(':')
        .split_once('-')
        .unwrap();
    let (mut lo, mut hi): (i64, i64) = (lo.parse().unwrap(), hi.parse().unwrap());
    let mut turns = 0;
    let reward = loop {
        let guess = (lo + hi) / 2;
        let step = env.step(&guess.to_string()).unwrap();
        turns += 1;
        if step.done {
            break step.reward;
        }
        match step.observation.as_str() {
            " hi:" => lo = guess + 1,
            " lo:" => hi = guess - 1,
            other => panic!("unexpected answer {other:?}"),
        }
        assert!(turns < 10, "bisection of 16 numbers takes at most 5 turns");
    };
    assert_eq!(reward, 1.0);

    // The metrics port takes the server's token, as its gRPC port does; health is open.
    let maddr = server.metrics_addr();
    let (refused, _) = http_get_as(&maddr, "/metrics", None);
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let (head, _) = http_get_as(&maddr, "/healthz", None);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (head, metrics) = http_get_as(&maddr, "/metrics", Some(TOKEN));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        metric(&metrics, "oxrl_env_steps_total{env=\"guess\"}"),
        Some(turns as f64),
        "{metrics}"
    );
    drop(env);
    server.stop();
}

#[test]
fn env_serve_needs_a_known_builtin() {
    let out = oxrl_unchecked(&["env", "serve", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--builtin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = oxrl_unchecked(&[
        "env",
        "serve",
        "--builtin",
        "chess",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("chess") && stderr.contains("calculator"),
        "{stderr}"
    );
}
