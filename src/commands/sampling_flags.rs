//! The sampling flags `oxrl eval` and `oxrl generate` share (`--temperature`, `--top-p`,
//! `--top-k`, `--min-p`), turned into `SamplingParams` and checked in one place.

use policy::SamplingParams;
use rollout::config::{check_sampling, ConfigError};

#[derive(clap::Args, Debug, Clone)]
pub struct SamplingFlags {
    /// Sampling temperature (0 is greedy).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Nucleus sampling: keep the most likely tokens holding this much probability (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Keep only the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Keep only tokens at least this fraction as likely as the most likely one (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
}

impl SamplingFlags {
    /// The sampling parameters these flags ask for.
    pub fn params(
        &self,
        max_new_tokens: usize,
        stop_tokens: Vec<u32>,
        seed: u64,
    ) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            max_new_tokens,
            stop_tokens,
            seed,
        }
    }

    /// Refuses values that cannot be meant (a NaN temperature, top-p outside (0, 1]...),
    /// naming the flag and its range.
    pub fn check(&self, max_new_tokens: usize, seed: u64) -> Result<(), ConfigError> {
        check_sampling(&self.params(max_new_tokens, Vec::new(), seed), |name| {
            format!("--{}", name.replace('_', "-"))
        })
    }
}
