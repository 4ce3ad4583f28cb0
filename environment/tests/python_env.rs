//! The Python example (examples/python-env) served for real and played through
//! `RemoteEnvs`: stubs generated from proto/oxrl.proto with grpcio-tools, the server started
//! on port 0 with a token, a digits game played to the end, a retried turn answered from the
//! server's cache, and a wrong token and a lost session refused as `Invalid`.
//!
//! Ignored by default: it needs a Python with grpcio and grpcio-tools. Run it with
//!
//! ```text
//! OXRL_PYTHON_ENV=/path/to/venv/bin/python \
//!     cargo test --release -p environment --test python_env -- --ignored
//! ```

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{client_runtime, connect};
use proto::environment_client::EnvironmentClient;
use proto::transport::{AuthToken, Security};
use tasks::{EnvError, EnvFactory, Environment, Problem};

const TOKEN: &str = "python-env-test-token";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// The Python server, killed when dropped.
struct PythonServer(Child);

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Generates the stubs into `stubs` and starts examples/python-env/server.py on port 0;
/// returns it and its URL.
fn start(python: &str, stubs: &Path) -> (PythonServer, String) {
    let proto_dir = repo().join("proto");
    let generated = Command::new(python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto_dir)
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .arg(proto_dir.join("oxrl.proto"))
        .status()
        .expect("OXRL_PYTHON_ENV runs");
    assert!(generated.success(), "grpc_tools.protoc failed");
    let mut child = Command::new(python)
        .arg(repo().join("examples/python-env/server.py"))
        .args(["--listen", "127.0.0.1:0"])
        .env("PYTHONPATH", stubs)
        .env("OXRL_AUTH_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the Python server starts");
    let stdout = child.stdout.take().unwrap();
    let server = PythonServer(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(addr) = line.strip_prefix("OXRL_LISTENING ") {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the Python server printed OXRL_LISTENING");
    (server, format!("http://{addr}"))
}

#[test]
#[ignore = "needs OXRL_PYTHON_ENV: a python with grpcio and grpcio-tools"]
fn the_python_example_plays_through_remote_envs() {
    let python = std::env::var("OXRL_PYTHON_ENV")
        .expect("set OXRL_PYTHON_ENV to a python with grpcio and grpcio-tools");
    let stubs = tempfile::tempdir().unwrap();
    let (_server, url) = start(&python, stubs.path());
    let rt = client_runtime();
    let security = Security::default().with_token(AuthToken::parse(TOKEN, "test").unwrap());
    let envs = connect(&url, "digits", &security, Duration::from_secs(5), 3, &rt);
    let problem = Problem {
        id: "addition-2/train/0".into(),
        prompt: "12+34=".into(),
        answer: "46".into(),
        solution: "46".into(),
    };

    let mut env = envs.make().unwrap();
    assert!(env.is_remote());
    assert_eq!(env.reset(&problem, 0).unwrap(), "12+34=");
    let hint = env.step("45").unwrap();
    assert_eq!(
        (hint.observation.as_str(), hint.reward, hint.done),
        (" 1b0c:", 0.0, false)
    );
    assert_eq!(env.step("it is 64").unwrap().observation, " 0b2c:");
    assert_eq!(env.step("no digits").unwrap().observation, " ?:");
    let found = env.step("46").unwrap();
    assert_eq!((found.reward, found.done), (1.0, true));
    env.close();

    // By hand: a repeated turn gets the cached reply, a turn out of order is refused.
    rt.block_on(async {
        let channel = security.channel(&url).await.unwrap();
        let mut client = EnvironmentClient::new(channel);
        client
            .reset(proto::EnvResetRequest {
                session_id: "by-hand".into(),
                problem_id: problem.id.clone(),
                prompt: problem.prompt.clone(),
                answer: problem.answer.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        let step = |turn, action: &str| proto::EnvStepRequest {
            session_id: "by-hand".into(),
            action: action.into(),
            turn,
        };
        let first = client.step(step(1, "45")).await.unwrap().into_inner();
        // The same turn with another action: the first reply, not a new step.
        let again = client.step(step(1, "46")).await.unwrap().into_inner();
        assert_eq!(first, again);
        let out_of_order = client.step(step(3, "46")).await.unwrap_err();
        assert_eq!(out_of_order.code(), tonic::Code::FailedPrecondition);
    });
    // Close through RemoteEnvs goes out in the background: the server forgets the session,
    // and the episode's next Step is NOT_FOUND there, Invalid here.
    let mut closed = envs.session();
    closed.reset(&problem, 0).unwrap();
    let id = closed.session_id().unwrap().to_string();
    closed.close();
    let forgotten = common::wait_until(Duration::from_secs(10), || {
        rt.block_on(async {
            let channel = security.channel(&url).await.unwrap();
            let probe = proto::EnvStepRequest {
                session_id: id.clone(),
                action: "1".into(),
                turn: 1,
            };
            let answer = EnvironmentClient::new(channel).step(probe).await;
            matches!(answer, Err(s) if s.code() == tonic::Code::NotFound)
        })
    });
    assert!(forgotten, "Close never reached the server");
    let err = closed.step("1").unwrap_err();
    assert!(matches!(err, EnvError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("NotFound"), "{err}");

    let wrong = connect(
        &url,
        "digits",
        &Security::default().with_token(AuthToken::parse("wrong-token", "test").unwrap()),
        Duration::from_secs(5),
        10,
        &rt,
    );
    let err = wrong.make().unwrap().reset(&problem, 0).unwrap_err();
    assert!(matches!(err, EnvError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("Unauthenticated"), "{err}");
}
