//! Helpers shared by the integration tests: the binary, small checkpoints, JSONL files, the
//! role processes, and the hand-driven gRPC calls (a probe actor's lease, a pushed group).

#![allow(dead_code)]

pub mod supervised;

use candle_core::Device;
use policy::{random_weights, save_model_dir, tokenizer::char_tokenizer, ModelConfig, ModelDir};
use proto::coordinator_client::CoordinatorClient;
use proto::learner_client::LearnerClient;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use tonic::codegen::{Body, Bytes, StdError};

/// Runs the `oxrl` binary with `args`; panics with its stderr if it fails.
pub fn oxrl(args: &[&str]) -> Output {
    let out = oxrl_unchecked(args);
    assert!(
        out.status.success(),
        "oxrl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the `oxrl` binary and returns whatever happened.
pub fn oxrl_unchecked(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oxrl"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the oxrl binary runs")
}

/// [`oxrl`] with extra environment variables; panics with its stderr if it fails.
pub fn oxrl_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_oxrl"))
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("the oxrl binary runs");
    assert!(
        out.status.success(),
        "oxrl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A small Llama (GQA, untied) or Qwen2 (q/k/v bias, tied) checkpoint written to `dir`.
pub fn write_checkpoint(dir: &Path, qwen2: bool, seed: u64) -> ModelDir {
    let tok = char_tokenizer();
    let mut cfg = ModelConfig::tiny(tok.vocab_size(), 32, 2, 4, 2);
    if qwen2 {
        cfg.architectures = vec!["Qwen2ForCausalLM".into()];
        cfg.model_type = "qwen2".into();
        cfg.attention_bias = None;
    } else {
        cfg.tie_word_embeddings = false;
    }
    cfg.eos_token_id = Some(2.into());
    let mut weights = random_weights(&cfg, seed, &Device::Cpu).unwrap();
    for (name, t) in weights.iter_mut() {
        if !name.ends_with("norm.weight") {
            *t = (t.clone() * 10.0).unwrap();
        }
    }
    save_model_dir(dir, &cfg, &tok, &weights).unwrap();
    ModelDir {
        config: cfg,
        tokenizer: tok,
        weights,
    }
}

/// Held-out sampled pass@1 (T = 1) of a run at its start and at its end, from the run's own
/// `eval.jsonl`: (step 0, last evaluation).
pub fn sampled_start_and_end(run: &Path) -> (f64, f64) {
    let evals = read_jsonl(&run.join("eval.jsonl"));
    assert!(
        evals.len() >= 2,
        "{} evaluations in {}",
        evals.len(),
        run.display()
    );
    assert_eq!(evals[0]["step"], 0, "the first evaluation is the start");
    let rate = |v: &serde_json::Value| v["eval_sampled_pass_rate"].as_f64().unwrap();
    (rate(&evals[0]), rate(evals.last().unwrap()))
}

/// The JSON object a command printed as its last stdout line (its report).
pub fn last_json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

/// Parses every line of a JSONL file.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// One role process started by a test, with its stdin held (closing it stops the role).
pub struct RoleProcess {
    pub child: std::process::Child,
    pub addr: Option<String>,
    stdin: Option<std::process::ChildStdin>,
    /// `OXRL_METRICS <addr>` lines (with `--metrics-listen`).
    metrics_lines: std::sync::mpsc::Receiver<String>,
    metrics: Option<String>,
}

impl RoleProcess {
    /// Starts `oxrl <args> --exit-with-parent`; with `listens`, waits for its address.
    pub fn start(args: &[&str], log: &Path, listens: bool) -> RoleProcess {
        RoleProcess::start_with_env(args, &[], log, listens)
    }

    /// [`RoleProcess::start`] with extra environment variables (e.g. `OXRL_AUTH_TOKEN`).
    pub fn start_with_env(
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
        listens: bool,
    ) -> RoleProcess {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_oxrl"))
            .args(args)
            .arg("--exit-with-parent")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("the oxrl binary starts");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (metrics_tx, metrics_lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(addr) = line.strip_prefix("OXRL_LISTENING ") {
                    let _ = tx.send(addr.trim().to_string());
                }
                if let Some(addr) = line.strip_prefix("OXRL_METRICS ") {
                    let _ = metrics_tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = listens.then(|| {
            rx.recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    panic!(
                        "oxrl {args:?} did not start listening; see {}",
                        log.display()
                    )
                })
        });
        RoleProcess {
            child,
            addr,
            stdin,
            metrics_lines,
            metrics: None,
        }
    }

    /// `http://` and the address it listens on (started with `listens`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr.as_deref().expect("a listening role"))
    }

    /// The address of its `/metrics` (started with `--metrics-listen`), waiting for it.
    pub fn metrics_addr(&mut self) -> String {
        if self.metrics.is_none() {
            let addr = self
                .metrics_lines
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("the role printed OXRL_METRICS");
            self.metrics = Some(addr);
        }
        self.metrics.clone().unwrap()
    }

    /// Waits for the process to exit, up to `deadline`.
    pub fn wait(&mut self, deadline: std::time::Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + deadline;
        while std::time::Instant::now() < until {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    /// Closes stdin (a clean stop) and waits; kills it if it does not stop in time.
    pub fn stop(mut self) {
        drop(self.stdin.take());
        if self.wait(std::time::Duration::from_secs(20)).is_none() {
            let _ = self.child.kill();
        }
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over HTTP/1.1 from `addr`, whatever its status: the head and the body.
pub fn http_get_response(addr: &str, path: &str) -> (String, String) {
    http_get_as(addr, path, None)
}

/// [`http_get_response`] with `token` sent as `Authorization: Bearer <token>`.
pub fn http_get_as(addr: &str, path: &str, token: Option<&str>) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the HTTP server answers");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_string(), body.to_string())
}

/// `GET path` over HTTP/1.1 from `addr`; the response body (it must be a 200).
pub fn http_get(addr: &str, path: &str) -> String {
    let (head, body) = http_get_response(addr, path);
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    body
}

/// The lines of a per-step JSONL file (`metrics.jsonl`, `trained_groups.jsonl`) in the
/// surviving lineage of steps, by step: a line for step s drops every earlier line for steps
/// >= s (a restarted learner trains again from its checkpoint, and the steps it lost are gone).
pub fn surviving_steps(path: &Path) -> std::collections::BTreeMap<u64, serde_json::Value> {
    let mut steps = std::collections::BTreeMap::new();
    if !path.exists() {
        return steps;
    }
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    for (i, raw) in lines.iter().enumerate() {
        let line: serde_json::Value = match serde_json::from_str(raw) {
            Ok(line) => line,
            // The file is read while a learner appends to it: its last line may be half there.
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
            Err(e) => panic!("{} line {}: {e}: {raw}", path.display(), i + 1),
        };
        let step = line["step"].as_u64().expect("a step number");
        steps.split_off(&step);
        steps.insert(step, line);
    }
    steps
}

/// The value of the sample `series` (name and labels as rendered) in a `/metrics` text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until `cond` holds, polling, or panics after `deadline` with `what`.
pub fn wait_until(deadline: std::time::Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + deadline;
    while !cond() {
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A loopback port that was free a moment ago (bound, then released), for a server that must
/// come back on the same address after a restart.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `text` as `dir/run.toml`; its path.
pub fn write_run_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `oxrl coordinator --listen 127.0.0.1:0 --config <config> <extra>`, logging to `dir/c.log`.
pub fn start_coordinator(dir: &Path, config: &Path, extra: &[&str]) -> RoleProcess {
    let config = config.to_str().unwrap();
    let mut args = vec!["coordinator", "--listen", "127.0.0.1:0", "--config", config];
    args.extend_from_slice(extra);
    RoleProcess::start(&args, &dir.join("c.log"), true)
}

/// The arguments of `oxrl learner --coordinator <coordinator> --listen 127.0.0.1:0 --out <out>`.
pub fn learner_args<'a>(coordinator: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "learner",
        "--coordinator",
        coordinator,
        "--listen",
        "127.0.0.1:0",
        "--out",
        out,
    ]
}

/// `oxrl learner --coordinator <coordinator> --listen 127.0.0.1:0 --out <out> <extra>`,
/// logging to `dir/l.log`.
pub fn start_learner(dir: &Path, coordinator: &str, out: &Path, extra: &[&str]) -> RoleProcess {
    start_learner_with_env(dir, coordinator, out, extra, &[])
}

/// [`start_learner`] with extra environment variables (e.g. `OXRL_AUTH_TOKEN`).
pub fn start_learner_with_env(
    dir: &Path,
    coordinator: &str,
    out: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> RoleProcess {
    let mut args = learner_args(coordinator, out.to_str().unwrap());
    args.extend_from_slice(extra);
    RoleProcess::start_with_env(&args, env, &dir.join("l.log"), true)
}

/// `oxrl actor --coordinator <coordinator> --name <name>`, logging to `log`.
pub fn start_actor(coordinator: &str, name: &str, log: &Path) -> RoleProcess {
    RoleProcess::start(
        &["actor", "--coordinator", coordinator, "--name", name],
        log,
        false,
    )
}

/// The group ids in the batch of every step of the run in `run`, in order.
pub fn trained_group_ids(run: &Path) -> Vec<String> {
    read_jsonl(&run.join("trained_groups.jsonl"))
        .iter()
        .flat_map(|l| l["groups"].as_array().unwrap().clone())
        .map(|g| g.as_str().unwrap().to_string())
        .collect()
}

/// A well-formed group of two samples (rewards 0 and 1) with these ids, sampled with
/// `version`: one the learner trains on; callers break it.
pub fn two_sample_group(
    group_id: &str,
    lease_id: &str,
    problem_id: &str,
    version: u64,
) -> proto::RolloutGroup {
    proto::RolloutGroup {
        group_id: group_id.into(),
        lease_id: lease_id.into(),
        problem_id: problem_id.into(),
        prompt_tokens: vec![10, 11, 12],
        samples: (0..2)
            .map(|i| proto::Sample {
                tokens: vec![20, 2],
                logprobs: vec![-0.5, -0.1],
                versions: vec![version, version],
                reward: i as f32,
                truncated: false,
                mask: Vec::new(),
                turns: 1,
                text: String::new(),
            })
            .collect(),
        lineage: 0,
    }
}

/// What the generated gRPC clients run on: a plain `tonic` channel, or the
/// `proto::transport::ClientChannel` that `Security` builds (TLS, a token).
pub trait GrpcChannel:
    tonic::client::GrpcService<
    tonic::body::Body,
    Error: Into<StdError>,
    ResponseBody: Body<Data = Bytes, Error: Into<StdError> + Send> + Send + 'static,
>
{
}

impl<T> GrpcChannel for T where
    T: tonic::client::GrpcService<
        tonic::body::Body,
        Error: Into<StdError>,
        ResponseBody: Body<Data = Bytes, Error: Into<StdError> + Send> + Send + 'static,
    >
{
}

/// Registers an actor named `probe` through `c` and leases up to `max_prompts` prompts for
/// version 0, asking again every 50 ms while the lease is refused (the learner registers and
/// publishes version 0 shortly after it listens); panics after `deadline`.
pub async fn probe_lease_with<T: GrpcChannel>(
    c: &mut CoordinatorClient<T>,
    max_prompts: u32,
    deadline: Duration,
) -> proto::LeaseReply {
    let me = c
        .register(proto::RegisterRequest {
            role: proto::Role::Actor as i32,
            advertise_addr: String::new(),
            name: "probe".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let until = std::time::Instant::now() + deadline;
    loop {
        let lease = c
            .lease(proto::LeaseRequest {
                member_id: me.member_id.clone(),
                version: 0,
                max_prompts,
            })
            .await
            .unwrap()
            .into_inner();
        if lease.refused() == proto::LeaseRefusal::Unspecified {
            return lease;
        }
        assert!(
            std::time::Instant::now() < until,
            "no lease: {:?}",
            lease.refused()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`probe_lease_with`] on a plain connection to the coordinator at `url`.
pub async fn probe_lease(url: &str, max_prompts: u32, deadline: Duration) -> proto::LeaseReply {
    let mut c = CoordinatorClient::connect(url.to_string()).await.unwrap();
    probe_lease_with(&mut c, max_prompts, deadline).await
}

/// Registers an actor `name` at the coordinator at `url` and leases up to `max_prompts`
/// prompts once, for the learner's current version (which must grant it): the member id,
/// that version and the lease.
pub async fn lease_now(
    url: &str,
    name: &str,
    max_prompts: u32,
) -> (String, u64, proto::LeaseReply) {
    let mut c = CoordinatorClient::connect(url.to_string()).await.unwrap();
    let member_id = c
        .register(proto::RegisterRequest {
            role: proto::Role::Actor as i32,
            advertise_addr: String::new(),
            name: name.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .member_id;
    let version = c
        .status(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .learner_version;
    let lease = c
        .lease(proto::LeaseRequest {
            member_id: member_id.clone(),
            version,
            max_prompts,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        lease.refused(),
        proto::LeaseRefusal::Unspecified,
        "{name}: no lease"
    );
    (member_id, version, lease)
}

/// Pushes `groups` on one stream through `l`; every ack, or the status that ended the stream.
pub async fn push_acks_with<T: GrpcChannel>(
    l: &mut LearnerClient<T>,
    groups: Vec<proto::RolloutGroup>,
) -> Result<Vec<proto::PushAck>, tonic::Status> {
    let mut acks = l
        .push_rollouts(tokio_stream::iter(groups))
        .await?
        .into_inner();
    let mut got = Vec::new();
    while let Some(a) = acks.message().await? {
        got.push(a);
    }
    Ok(got)
}

/// [`push_acks_with`] on a plain connection to the learner at `url`.
pub async fn push_acks(
    url: &str,
    groups: Vec<proto::RolloutGroup>,
) -> Result<Vec<proto::PushAck>, tonic::Status> {
    let mut l = LearnerClient::connect(url.to_string()).await.unwrap();
    push_acks_with(&mut l, groups).await
}

/// Checks acks, as (group id, outcome, reason), against `expect`, in order: the same group
/// ids and outcomes, each reason mentioning the expected words.
pub fn assert_acks(
    acks: &[(String, i32, String)],
    expect: &[(&str, proto::push_ack::Outcome, &str)],
) {
    assert_eq!(acks.len(), expect.len(), "{acks:?}");
    for ((id, outcome, reason), (eid, eo, ereason)) in acks.iter().zip(expect) {
        assert_eq!((id.as_str(), *outcome), (*eid, *eo as i32), "{acks:?}");
        assert!(
            reason.contains(ereason),
            "{id}: {reason:?} should mention {ereason:?}"
        );
    }
}

/// Subscribes to the weights through `l` from the start; the first chunk of the stream.
pub async fn first_weights_chunk<T: GrpcChannel>(l: &mut LearnerClient<T>) -> proto::WeightsChunk {
    let mut stream = l
        .subscribe_weights(proto::SubscribeWeightsRequest {
            after_version: 0,
            member_id: String::new(),
            lineage: 0,
        })
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap()
}

/// The value after `flag` in `args` (exactly once); `at` names where they come from.
pub fn flag_value<'a>(args: &'a [String], flag: &str, at: &str) -> &'a str {
    let positions: Vec<usize> = (0..args.len()).filter(|&i| args[i] == flag).collect();
    assert_eq!(
        positions.len(),
        1,
        "{at}: {flag} should appear once in {args:?}"
    );
    args.get(positions[0] + 1)
        .unwrap_or_else(|| panic!("{at}: {flag} has no value"))
}

/// Waits for an `oxrl run` child to exit 0 within `deadline`; otherwise kills it and fails
/// with its stderr (`stderr_log`) and the learner's log of `run`.
pub fn wait_run_ok(
    mut child: std::process::Child,
    stderr_log: &Path,
    run: &Path,
    deadline: std::time::Duration,
) {
    let started = std::time::Instant::now();
    let logs = || {
        format!(
            "{}\nlearner log:\n{}",
            std::fs::read_to_string(stderr_log).unwrap_or_default(),
            std::fs::read_to_string(run.join("logs/learner.log")).unwrap_or_default()
        )
    };
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the run did not end within {deadline:?}\n{}", logs());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success(), "oxrl run failed ({status}):\n{}", logs());
}

/// A small reward model (the character tokenizer, like [`write_checkpoint`]'s policies) with
/// random weights and a head whose scores spread over a few units, written to `dir`.
pub fn write_reward_model(dir: &Path, seed: u64) {
    let tok = char_tokenizer();
    let mut cfg = ModelConfig::tiny(tok.vocab_size(), 32, 2, 4, 2);
    cfg.tie_word_embeddings = true;
    let mut weights = random_weights(&cfg, seed, &Device::Cpu).unwrap();
    weights.remove("lm_head.weight");
    let head: Vec<f32> = (0..32).map(|i| ((i * 5 % 7) as f32 - 3.0) * 0.3).collect();
    let head = candle_core::Tensor::from_vec(head, (1, 32), &Device::Cpu).unwrap();
    weights.insert(policy::SCORE_WEIGHT.into(), head);
    let config = policy::reward_config(&cfg, 0).unwrap();
    policy::RewardModelDir {
        config,
        tokenizer: tok,
        weights,
    }
    .save(dir)
    .unwrap();
}
