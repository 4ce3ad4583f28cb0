//! The run config: one TOML file (every field has a default) for `oxrl run`, saved next
//! to the run's outputs as `config.toml`.

use crate::update::UpdateConfig;
use policy::SamplingParams;
use serde::{Deserialize, Serialize};

/// Everything a training run needs to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Model directory, or `default` for the embedded default.
    pub model: String,
    /// Task spec (`addition:2`, `FILE.jsonl`, ...).
    pub task: String,
    pub seed: u64,
    /// Optimizer steps of the run.
    pub steps: u64,
    /// Prompts (groups) per optimizer step.
    pub prompts_per_step: usize,
    /// Completions per prompt (G).
    pub group_size: usize,
    /// Greedy held-out evaluation every N steps (0 = never; always at the end when > 0).
    pub eval_every: u64,
    pub eval_n: usize,
    /// Checkpoint every N steps (0 = only at the end).
    pub checkpoint_every: u64,
    /// Actors' sampling (temperature 1 for RL; stop tokens are the model's EOS).
    pub sampling: SamplingParams,
    pub update: UpdateConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            model: "default".into(),
            task: "addition:2".into(),
            seed: 0,
            steps: 60,
            prompts_per_step: 64,
            group_size: 16,
            eval_every: 10,
            eval_n: 500,
            checkpoint_every: 20,
            sampling: SamplingParams {
                max_new_tokens: 8,
                ..SamplingParams::default()
            },
            update: UpdateConfig::default(),
        }
    }
}
