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

/// Parses every line of a JSONL file.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
