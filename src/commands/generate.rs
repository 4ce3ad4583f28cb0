//! `oxrl generate`: sample one completion of a prompt.

use super::sampling_flags::SamplingFlags;
use crate::model_arg;

#[derive(clap::Args)]
pub struct Args {
    /// Model directory, or `default` for the embedded default.
    #[arg(long, default_value = model_arg::DEFAULT_MODEL)]
    model: String,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: SamplingFlags,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON line {"prompt", "completion", "completion_ids", "logprobs"}.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    a.sampling.check(a.max_new_tokens, a.seed)?;
    let m = model_arg::load(&a.model)?;
    let policy = m.policy()?.for_sampling()?;
    let prompt = m.tokenizer.encode(&a.prompt)?;
    anyhow::ensure!(!prompt.is_empty(), "the prompt is empty after tokenization");
    let params = a.sampling.params(a.max_new_tokens, m.eos_ids(), a.seed);
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
