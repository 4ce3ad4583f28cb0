//! A retried Step is answered from the server's turn cache, not stepped twice: sent by hand
//! with the same turn number, and through `RemoteEnvs` when the first try's reply comes too
//! late (the client gives up on it and retries while the server is still stepping).

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client_runtime, connect, Served};
use environment::{EnvServer, Limits};
use proto::environment_client::EnvironmentClient;
use proto::transport::Security;
use tasks::{EnvError, EnvFactory, EnvStep, Environment, Problem};

/// Counts the steps its environments take; the first step of each takes `first_step_delay`
/// (a game that thinks slowly, once).
struct Counting {
    steps: Arc<AtomicU32>,
    first_step_delay: Duration,
}

struct CountingEnv {
    steps: Arc<AtomicU32>,
    delay: Duration,
    taken: u32,
}

impl EnvFactory for Counting {
    fn name(&self) -> &str {
        "counting"
    }
    fn make(&self) -> Result<Box<dyn Environment>, EnvError> {
        Ok(Box::new(CountingEnv {
            steps: self.steps.clone(),
            delay: self.first_step_delay,
            taken: 0,
        }))
    }
}

impl Environment for CountingEnv {
    fn reset(&mut self, problem: &Problem, _seed: u64) -> Result<String, EnvError> {
        Ok(problem.prompt.clone())
    }
    fn step(&mut self, action: &str) -> Result<EnvStep, EnvError> {
        if self.taken == 0 {
            std::thread::sleep(self.delay);
        }
        self.taken += 1;
        let n = self.steps.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(EnvStep {
            observation: format!(" step {n} saw {action}:"),
            reward: 0.0,
            done: false,
        })
    }
}

fn counting_server(first_step_delay: Duration) -> (EnvServer, Arc<AtomicU32>) {
    let steps = Arc::new(AtomicU32::new(0));
    let factory = Counting {
        steps: steps.clone(),
        first_step_delay,
    };
    let server = EnvServer::new(vec![Arc::new(factory)], Limits::default()).unwrap();
    (server, steps)
}

fn problem() -> Problem {
    Problem {
        id: "p/train/0".into(),
        prompt: "count:".into(),
        answer: "0".into(),
        solution: String::new(),
    }
}

#[test]
fn the_same_turn_twice_is_answered_from_the_cache() {
    let (server, steps) = counting_server(Duration::ZERO);
    let served = Served::start(server, Security::default());
    let rt = client_runtime();
    rt.block_on(async {
        let channel = Security::default().channel(&served.url()).await.unwrap();
        let mut client = EnvironmentClient::new(channel);
        let reset = proto::EnvResetRequest {
            session_id: "s1".into(),
            problem_id: "p".into(),
            prompt: "count:".into(),
            ..Default::default()
        };
        let first = client.reset(reset.clone()).await.unwrap().into_inner();
        let again = client.reset(reset).await.unwrap().into_inner();
        assert_eq!(first, again, "a repeated Reset is answered the same");
        let step = |turn, action: &str| proto::EnvStepRequest {
            session_id: "s1".into(),
            action: action.into(),
            turn,
        };
        let one = client.step(step(1, "a")).await.unwrap().into_inner();
        let repeat = client.step(step(1, "a")).await.unwrap().into_inner();
        assert_eq!(one, repeat);
        assert_eq!(one.observation, " step 1 saw a:");
        assert_eq!(
            steps.load(Ordering::SeqCst),
            1,
            "stepped once for two calls"
        );
        let two = client.step(step(2, "b")).await.unwrap().into_inner();
        assert_eq!(two.observation, " step 2 saw b:");
        let skipped = client.step(step(4, "c")).await.unwrap_err();
        assert_eq!(skipped.code(), tonic::Code::FailedPrecondition);
        assert!(skipped.message().contains("send turn 3 next"), "{skipped}");
    });
    assert_eq!(steps.load(Ordering::SeqCst), 2);
    let metrics = served.server.render_metrics();
    for want in [
        "oxrl_env_replayed_steps_total 1",
        "oxrl_env_steps_total{env=\"counting\"} 2",
        "oxrl_env_errors_total{reason=\"turn_out_of_order\"} 1",
    ] {
        assert!(metrics.contains(want), "{want} missing from\n{metrics}");
    }
}

#[test]
fn a_step_retried_after_a_timeout_is_not_stepped_twice() {
    // The first step takes longer than the client's deadline: the client gives up on it and
    // retries the same turn, which waits for the first to finish and gets its reply.
    let timeout = Duration::from_millis(300);
    let (server, steps) = counting_server(timeout * 2);
    let served = Served::start(server, Security::default());
    let rt = client_runtime();
    let envs = connect(&served.url(), "", &Security::default(), timeout, 6, &rt);
    let mut env = envs.make().unwrap();
    env.reset(&problem(), 0).unwrap();
    let started = Instant::now();
    let first = env.step("a").unwrap();
    assert!(
        started.elapsed() >= timeout,
        "the first try should have timed out"
    );
    assert_eq!(first.observation, " step 1 saw a:");
    assert_eq!(env.step("b").unwrap().observation, " step 2 saw b:");
    assert_eq!(steps.load(Ordering::SeqCst), 2, "each turn stepped once");
    let metrics = served.server.render_metrics();
    assert!(
        !metrics.contains("oxrl_env_replayed_steps_total 0"),
        "the retry was answered from the cache:\n{metrics}"
    );
}
