//! `oxrl generate`: sample one completion of a prompt.

use crate::model_arg;
use policy::SamplingParams;

#[derive(clap::Args)]
pub struct Args {
    /// Model directory, or `default` for the embedded default.
    #[arg(long, default_value = model_arg::DEFAULT_MODEL)]
    model: String,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON line {"prompt", "completion", "completion_ids", "logprobs"}.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let m = model_arg::load(&a.model)?;
    let policy = m.policy()?;
    let prompt = m.tokenizer.encode(&a.prompt)?;
    anyhow::ensure!(!prompt.is_empty(), "the prompt is empty after tokenization");
    let params = SamplingParams {
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        max_new_tokens: a.max_new_tokens,
        stop_tokens: m.eos_ids(),
        seed: a.seed,
        ..Default::default()
    };
    let c = policy::generate(&policy, vec![prompt], &params, m.tokenizer.pad_id())?.remove(0);
    let completion = m.tokenizer.decode(&c.tokens)?;
    if a.json {
        let line = serde_json::json!({
            "prompt": a.prompt, "completion": completion,
            "completion_ids": c.tokens, "logprobs": c.logprobs,
        });
        println!("{line}");
    } else {
        println!("{completion}");
    }
    Ok(())
}
