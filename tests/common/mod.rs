//! Helpers shared by the integration tests: the binary, small checkpoints, JSONL files.

#![allow(dead_code)]

use candle_core::Device;
use policy::{random_weights, save_model_dir, tokenizer::char_tokenizer, ModelConfig, ModelDir};
use std::path::Path;
use std::process::{Command, Output};

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

/// Greedy pass@1 of `model` on 500 held-out 2-digit additions, through `oxrl eval`.
pub fn held_out_pass_rate(model: &str) -> f64 {
    let out = oxrl(&[
        "eval",
        "--model",
        model,
        "--task",
        "addition:2",
        "--n",
        "500",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    json["samplers"][0]["accuracy"].as_f64().unwrap()
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

/// `GET path` over HTTP/1.1 from `addr`; the response body.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the HTTP server answers");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    body.to_string()
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
