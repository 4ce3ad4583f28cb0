//! The reward model as a service, as a user runs it: `oxrl rm serve` scores what the reward
//! model scores in process and refuses a wrong token; a synchronous run takes its rewards
//! from a served reward model (exactly the sigmoid of the scores it served); the pipeline
//! rides out the reward server killed and restarted mid-run, its groups dropped and counted
//! meanwhile, never rewarded zero.

mod common;

use common::{http_get_as, metric, read_jsonl, RoleProcess};
use proto::transport::{AuthToken, Security};
use reward_service::{BatchLimits, RewardClient, RewardError, RewardServer, Scorer};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "rm-serve-test-token-3";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn rm_server(dir: &Path, model: &Path, listen: &str) -> RoleProcess {
    let log = dir.join(format!("rm-{}.log", listen.replace(':', "_")));
    RoleProcess::start_with_env(
        &[
            "rm",
            "serve",
            "--model",
            model.to_str().unwrap(),
            "--listen",
            listen,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &[("OXRL_AUTH_TOKEN", TOKEN)],
        &log,
        true,
    )
}

fn client(rt: &tokio::runtime::Runtime, url: &str, token: &str) -> RewardClient {
    let security = Security::default().with_token(AuthToken::parse(token, "test").unwrap());
    RewardClient::connect(
        url,
        &security,
        Duration::from_secs(5),
        2,
        rt.handle().clone(),
    )
    .unwrap()
}

#[test]
fn rm_serve_scores_as_the_model_does_and_refuses_a_wrong_token() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("rm");
    common::write_reward_model(&model, 3);
    let mut server = rm_server(dir.path(), &model, "127.0.0.1:0");
    let rt = runtime();
    let tok = policy::tokenizer::char_tokenizer();
    let seqs: Vec<Vec<u32>> = ["12+34=46", "7+5=", "1"]
        .iter()
        .map(|t| tok.encode(t).unwrap())
        .collect();

    let wrong = client(&rt, &server.url(), "not-the-token-at-all");
    let refused = wrong.score_blocking(&seqs).unwrap_err();
    assert!(matches!(refused, RewardError::Invalid(_)), "{refused}");
    assert!(refused.to_string().contains("Unauthenticated"), "{refused}");

    let right = client(&rt, &server.url(), TOKEN);
    let served = right.score_blocking(&seqs).unwrap();
    let dir_model =
        policy::RewardModelDir::load(&model, &candle_core::Device::Cpu, candle_core::DType::F32)
            .unwrap();
    let rm = dir_model.model().unwrap();
    for (seq, got) in seqs.iter().zip(&served) {
        let alone = Scorer::score(&rm, std::slice::from_ref(seq)).unwrap()[0];
        assert!(
            (alone - got).abs() < 1e-5,
            "served {got}, in process {alone}"
        );
    }
    let outside = right.score_blocking(&[vec![100_000]]).unwrap_err();
    assert!(outside.to_string().contains("vocabulary"), "{outside}");

    // Its metrics port takes the same token.
    let maddr = server.metrics_addr();
    let (refused, _) = http_get_as(&maddr, "/metrics", None);
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let (head, text) = http_get_as(&maddr, "/metrics", Some(TOKEN));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        metric(&text, "oxrl_rm_sequences_total"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "oxrl_rm_errors_total{reason=\"invalid_request\"}"),
        Some(1.0),
        "{text}"
    );
}

/// A reward model that is a known function of the tokens, remembering every score it gave.
struct Known {
    served: Arc<Mutex<Vec<f32>>>,
}

fn known(seq: &[u32]) -> f32 {
    (seq.iter().map(|&t| t as f32).sum::<f32>() * 0.37).sin() * 3.0
}

impl Scorer for Known {
    fn vocab_size(&self) -> usize {
        1 << 20
    }
    fn score(&self, sequences: &[Vec<u32>]) -> Result<Vec<f32>, String> {
        let scores: Vec<f32> = sequences.iter().map(|s| known(s)).collect();
        self.served.lock().unwrap().extend(&scores);
        Ok(scores)
    }
}

/// A small run of a tiny checkpoint taking its rewards from `url`.
fn run_config(dir: &Path, url: &str, steps: u64, actors: usize) -> PathBuf {
    let model = dir.join("policy");
    common::write_checkpoint(&model, false, 9);
    let text = format!(
        r#"
model = {model:?}
task = "addition:2"
steps = {steps}
prompts_per_step = 4
group_size = 4
eval_every = 0
eval_n = 8
eval_samples = 1
checkpoint_every = 0
train_size = 0
reward = {{ rm = "{url}", attempts = 2, timeout_ms = 2000 }}

[sampling]
max_new_tokens = 4

[pipeline]
actors = {actors}
prompts_per_lease = 4
"#
    );
    common::write_run_config(dir, &text)
}

fn spawn_run(dir: &Path, config: &Path, args: &[&str]) -> (Child, PathBuf) {
    let run = dir.join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_oxrl"))
        .args(["run", "--config", config.to_str().unwrap(), "--out"])
        .arg(&run)
        .args(args)
        .env("RUST_LOG", "info")
        .env("OXRL_AUTH_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("oxrl-run.log")).unwrap())
        .spawn()
        .expect("the oxrl binary starts");
    (child, run)
}

#[test]
fn a_synchronous_run_trains_on_the_sigmoid_of_the_served_scores() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let served = Arc::new(Mutex::new(Vec::new()));
    let server = RewardServer::new(
        Known {
            served: served.clone(),
        },
        BatchLimits::default(),
    );
    let security = Security::default().with_token(AuthToken::parse(TOKEN, "test").unwrap());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(server.serve(listener, security, std::future::pending()));
    let steps = 3;
    let config = run_config(dir.path(), &url, steps, 1);
    let (child, run) = spawn_run(dir.path(), &config, &["--sync"]);
    common::wait_run_ok(
        child,
        &dir.path().join("oxrl-run.log"),
        &run,
        Duration::from_secs(300),
    );
    let lines = read_jsonl(&run.join("metrics.jsonl"));
    assert_eq!(lines.len(), steps as usize, "{lines:?}");
    let samples: f64 = lines.iter().map(|l| l["samples"].as_f64().unwrap()).sum();
    let rewarded: f64 = lines
        .iter()
        .map(|l| l["reward_mean"].as_f64().unwrap() * l["samples"].as_f64().unwrap())
        .sum();
    let served = served.lock().unwrap().clone();
    assert_eq!(
        served.len() as f64,
        samples,
        "every trained sample scored once"
    );
    let want: f64 = served
        .iter()
        .map(|&s| 1.0 / (1.0 + (-s as f64).exp()))
        .sum();
    assert!(
        (rewarded - want).abs() < 1e-3 * want.max(1.0),
        "the rewards sum to {rewarded}, the sigmoids of the served scores to {want}"
    );
    let trained = lines
        .iter()
        .filter(|l| l["zero_variance_groups"].as_u64() < l["prompts"].as_u64())
        .count();
    assert!(trained > 0, "no step had a group to train on: {lines:?}");
}

#[test]
fn the_pipeline_rides_out_the_reward_server_killed_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("rm");
    common::write_reward_model(&model, 4);
    let listen = format!("127.0.0.1:{}", common::free_port());
    let server = rm_server(dir.path(), &model, &listen);
    let steps = 40;
    let config = run_config(dir.path(), &format!("http://{listen}"), steps, 1);
    let (child, run) = spawn_run(dir.path(), &config, &[]);
    let actor_log = || std::fs::read_to_string(run.join("logs/actor-0.log")).unwrap_or_default();
    common::wait_until(Duration::from_secs(240), "two steps trained", || {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .map(|t| t.lines().count() >= 2)
            .unwrap_or(false)
    });
    drop(server); // SIGKILL
    common::wait_until(Duration::from_secs(120), "a group dropped", || {
        actor_log().contains("dropped a group: the reward model failed")
    });
    let _server = rm_server(dir.path(), &model, &listen);
    common::wait_run_ok(
        child,
        &dir.path().join("oxrl-run.log"),
        &run,
        Duration::from_secs(400),
    );
    let lines = read_jsonl(&run.join("metrics.jsonl"));
    assert_eq!(lines.len(), steps as usize);
    for l in &lines {
        // Sigmoids of scores: never 0 or 1, so never a sum a verifier (or a zero) would give.
        let (mean, n) = (
            l["reward_mean"].as_f64().unwrap(),
            l["samples"].as_f64().unwrap(),
        );
        let total = mean * n;
        assert!(mean > 0.0 && mean < 1.0, "{l}");
        assert!(
            (total - total.round()).abs() > 1e-6,
            "binary-looking rewards: {l}"
        );
    }
    assert!(actor_log().contains("reward_model"), "the drop says why");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("logs/actor-0.json")).unwrap())
            .unwrap();
    assert!(summary["groups_dropped"].as_u64().unwrap() > 0, "{summary}");
    eprintln!("actor summary after the restart: {summary}");
}
