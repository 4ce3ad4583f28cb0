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
}

impl RoleProcess {
    /// Starts `oxrl <args> --exit-with-parent`; with `listens`, waits for its address.
    pub fn start(args: &[&str], log: &Path, listens: bool) -> RoleProcess {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_oxrl"))
            .args(args)
            .arg("--exit-with-parent")
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("the oxrl binary starts");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
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
        let addr = listens.then(|| {
            rx.recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    panic!(
                        "oxrl {args:?} did not start listening; see {}",
                        log.display()
                    )
                })
        });
        RoleProcess { child, addr, stdin }
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
