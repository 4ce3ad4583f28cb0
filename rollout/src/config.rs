//! Run configuration: plain serde data shared by every role (the coordinator hands the
//! run's TOML to the learner and actors), so no role depends on another for its config.
//! Every struct has defaults and rejects unknown keys; `validate.rs` says which values can be
//! meant and `wire.rs` is the one way the config travels between roles.

mod validate;
mod weight_sync;
mod wire;

pub use validate::{at_least, check_sampling, real, ConfigError, Interval};
pub use weight_sync::{UnknownWeightSync, WeightSync};

use policy::SamplingParams;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Everything a training run needs to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Model directory, or `default` for the embedded default.
    pub model: String,
    /// Task spec (`addition:2`, `FILE.jsonl`, ...).
    pub task: String,
    /// A JSONL file of held-out problems for a dataset task (the in-run evaluation and
    /// `oxrl fit` use it; the whole task file then trains). Without it a dataset is split by
    /// prompt hash, `eval_fraction` of it held out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_data: Option<String>,
    /// Fraction of a dataset's prompts held out for evaluation when there is no `eval_data`.
    pub eval_fraction: f64,
    /// Training prompts of a procedural task, walked in epochs (0 = an unbounded stream, every
    /// prompt new). A finite pool is what lets the curriculum retire prompts for good.
    pub train_size: u64,
    /// Passes over the training pool before the run ends on its own (0 = no limit; `steps`
    /// still bounds the run).
    pub epochs: u64,
    pub seed: u64,
    /// Optimizer steps of the run.
    pub steps: u64,
    /// Prompts (groups) per optimizer step.
    pub prompts_per_step: usize,
    /// Completions per prompt (G).
    pub group_size: usize,
    /// Greedy held-out evaluation every N steps (0 = never; always at the end when > 0).
    pub eval_every: u64,
    /// Held-out problems evaluated (capped at the held-out set's size).
    pub eval_n: usize,
    /// Completions per problem of the sampled (T = 1) evaluation; its pass@1 is their mean.
    pub eval_samples: usize,
    /// Checkpoint every N steps (0 = only at the end).
    pub checkpoint_every: u64,
    /// Actors' sampling (temperature 1 for RL; stop tokens are the model's EOS).
    pub sampling: SamplingParams,
    pub update: UpdateConfig,
    /// The multi-process pipeline (ignored by `--sync`).
    pub pipeline: PipelineConfig,
    /// Episodes: the environment the model acts in, and their caps (one turn by default).
    pub episode: EpisodeConfig,
    /// Where rewards come from: the task's verifier, or a served reward model
    /// (`reward = { rm = "URL" }`), alone or with the verifier.
    pub reward: RewardConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            model: "default".into(),
            task: "addition:2".into(),
            eval_data: None,
            eval_fraction: 0.1,
            train_size: 1024,
            epochs: 0,
            seed: 0,
            steps: 100,
            prompts_per_step: 32,
            group_size: 16,
            eval_every: 10,
            eval_n: 500,
            eval_samples: 4,
            checkpoint_every: 20,
            sampling: SamplingParams {
                max_new_tokens: 8,
                ..SamplingParams::default()
            },
            update: UpdateConfig::default(),
            pipeline: PipelineConfig::default(),
            episode: EpisodeConfig::default(),
            reward: RewardConfig::default(),
        }
    }
}

impl RunConfig {
    /// How a dataset task divides into train and held-out problems: `eval_data` when set,
    /// else a hash split holding out `eval_fraction`.
    pub fn dataset_split(&self) -> tasks::DatasetSplit {
        match &self.eval_data {
            Some(file) => tasks::DatasetSplit::EvalFile(file.into()),
            None => tasks::DatasetSplit::Hashed {
                eval_fraction: self.eval_fraction,
            },
        }
    }

    /// The run's problems: the task with its held-out split, a procedural task's training
    /// side cut to the finite pool of `train_size` prompts. Every role builds it this way, so
    /// they agree on which problem an index names.
    pub fn problem_source(
        &self,
        registry: &tasks::VerifierRegistry,
    ) -> Result<Box<dyn tasks::ProblemSource>, tasks::TaskError> {
        let source =
            tasks::from_spec_split(&self.task, self.seed, registry, &self.dataset_split())?;
        Ok(tasks::finite_train(source, self.train_size))
    }
}

/// Hyper-parameters of the RL update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateConfig {
    pub objective: Objective,
    pub aggregation: Aggregation,
    pub advantage_norm: AdvantageNorm,
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: u64,
    pub optimizer: AdamWConfig,
    /// Pipeline lag bound k: a group with a token sampled more than k versions before the
    /// version being trained is dropped.
    pub max_lag: u64,
    /// Sequences per forward/backward pass (gradients are summed across them).
    pub micro_batch: usize,
    /// Run each distinct prompt of a micro-batch once and its completions after it (the
    /// same log-probs and gradients as the written-out sequences, to float error; a group's
    /// G completions pay for its prompt once instead of G times). `false` writes every
    /// sequence out in full.
    pub share_prompts: bool,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            objective: Objective::default(),
            aggregation: Aggregation::Prompt,
            advantage_norm: AdvantageNorm::Batch,
            lr: 3e-4,
            warmup: 10,
            optimizer: AdamWConfig::default(),
            max_lag: 8,
            micro_batch: 256,
            share_prompts: true,
        }
    }
}

/// Optimizer hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 = off).
    pub max_grad_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-15,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
        }
    }
}

/// Which surrogate objective to optimise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Objective {
    /// Truncated importance-sampling REINFORCE.
    Cispo { eps_max: f64 },
    /// PPO's clipped surrogate (GRPO; DAPO's clip-higher when `eps_high > eps_low`).
    PpoClip { eps_low: f64, eps_high: f64 },
    /// Sequence-level ratio with PPO clipping.
    Gspo { eps_low: f64, eps_high: f64 },
}

impl Default for Objective {
    fn default() -> Self {
        Objective::Cispo { eps_max: 4.0 }
    }
}

/// How token terms are averaged into the objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Mean over prompts of (sum over the group's tokens / the group's token count): ScaleRL.
    #[default]
    Prompt,
    /// Mean over samples of the per-sample token mean (GRPO).
    Sample,
    /// Mean over all tokens of the batch (DAPO).
    Token,
}

/// How group-centred advantages are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageNorm {
    /// Divide by the standard deviation of every advantage in the batch (ScaleRL).
    #[default]
    Batch,
    /// Divide by each group's own standard deviation (GRPO).
    Group,
    /// Leave them as `r - mean(r)`.
    None,
}

/// The asynchronous pipeline: processes, leases, liveness, curriculum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Actor processes `oxrl run` starts.
    pub actors: usize,
    /// Prompts per lease (an actor samples `group_size` completions of each in one batch).
    pub prompts_per_lease: usize,
    /// A lease not completed within this many seconds returns its prompts to the pool.
    pub lease_timeout_s: f64,
    /// How often actors heartbeat.
    pub heartbeat_interval_ms: u64,
    /// An actor silent this long is declared dead and its leases return to the pool.
    pub actor_timeout_s: f64,
    /// No-Positive-Resampling: retire a prompt whose pass rate reaches this.
    pub retire_pass_rate: f64,
    /// Samples of a prompt needed before its pass rate can retire it.
    pub retire_min_samples: usize,
    /// A prompt's pass rate is the mean reward of its last this many samples (a recent
    /// window, not the whole run, so a prompt is judged by the policy as it is now).
    pub pass_rate_window: usize,
    /// Groups the learner queues before backpressure reaches the actors. Keep it near
    /// `prompts_per_step`: a queued group ages one version per step it waits.
    pub learner_queue: usize,
    /// Restarts `oxrl run` gives one crashed role (the coordinator, the learner, each actor)
    /// within `restart_window_s`; one crash more ends the run (0: the first crash ends it).
    pub max_restarts: u32,
    /// The window, in seconds, over which `max_restarts` counts a role's restarts.
    pub restart_window_s: f64,
    /// Delay before restarting a crashed role; it doubles with each earlier restart of the
    /// same role within the window.
    pub restart_backoff_ms: u64,
    /// The longest delay before a restart.
    pub restart_backoff_max_ms: u64,
    /// How versions travel to actors: "full" (fp32, exact; the default), "bf16", "delta"
    /// (fp32 XOR the actor's version: exact, fewer bytes) or "bf16-delta".
    pub weight_sync: WeightSync,
}

/// The timeouts as durations; call them on a validated config (a negative or NaN number of
/// seconds has no duration).
impl PipelineConfig {
    /// How long an actor has to complete a lease.
    pub fn lease_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.lease_timeout_s)
    }

    /// How long an actor may stay silent before it is declared dead.
    pub fn actor_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.actor_timeout_s)
    }

    /// How often members heartbeat.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// The window over which a role's restarts count against `max_restarts`.
    pub fn restart_window(&self) -> Duration {
        Duration::from_secs_f64(self.restart_window_s)
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            actors: 2,
            prompts_per_lease: 16,
            lease_timeout_s: 60.0,
            heartbeat_interval_ms: 500,
            actor_timeout_s: 5.0,
            retire_pass_rate: 0.9,
            retire_min_samples: 16,
            pass_rate_window: 32,
            learner_queue: 32,
            max_restarts: 5,
            restart_window_s: 600.0,
            restart_backoff_ms: 1000,
            restart_backoff_max_ms: 30_000,
            weight_sync: WeightSync::Full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasks::Split;

    fn write_lines(name: &str, prompts: &[&str]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("oxrl-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let text: Vec<String> = prompts
            .iter()
            .map(|p| format!(r#"{{"prompt": "{p}", "answer": "1"}}"#))
            .collect();
        std::fs::write(&path, text.join("\n")).unwrap();
        path
    }

    #[test]
    fn the_run_config_decides_what_is_held_out() {
        let prompts: Vec<String> = (0..200).map(|i| format!("q{i}")).collect();
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let train = write_lines("train.jsonl", &refs);
        let eval = write_lines("eval.jsonl", &["e0", "e1", "e2"]);
        let registry = tasks::VerifierRegistry::new();
        let mut cfg = RunConfig {
            task: train.display().to_string(),
            ..RunConfig::default()
        };
        // Without eval_data: a hash split, a tenth held out, disjoint from training.
        let hashed = cfg.problem_source(&registry).unwrap();
        let (n_train, n_eval) = (
            hashed.len(Split::Train).unwrap(),
            hashed.len(Split::Eval).unwrap(),
        );
        assert_eq!(n_train + n_eval, 200);
        assert!((5..=40).contains(&n_eval), "{n_eval} held out");
        let train_prompts: std::collections::HashSet<String> = (0..n_train)
            .map(|i| hashed.problem(Split::Train, i).prompt)
            .collect();
        assert!(
            (0..n_eval).all(|i| !train_prompts.contains(&hashed.problem(Split::Eval, i).prompt))
        );
        // With eval_data: the whole task file trains and the eval file is held out.
        cfg.eval_data = Some(eval.display().to_string());
        let split = cfg.problem_source(&registry).unwrap();
        assert_eq!(split.len(Split::Train), Some(200));
        assert_eq!(split.len(Split::Eval), Some(3));
        assert_eq!(split.problem(Split::Eval, 2).prompt, "e2");
        // eval_n beyond the held-out set is capped, never repeated.
        assert_eq!(tasks::capped_eval_n(split.as_ref(), 500), 3);
        // A procedural task's training side is the finite pool.
        let pool = RunConfig::default().problem_source(&registry).unwrap();
        assert_eq!(pool.len(Split::Train), Some(1024));
    }
}

/// Multi-turn episodes: where the environment is and how long an episode may run. The
/// default is the one-turn episode every task has always been (prompt, answer, verifier).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EpisodeConfig {
    /// The environment: a built-in (`single`, `calculator`, `guess`), or with `url` the name
    /// the server there knows it by.
    pub env: String,
    /// An `oxrl.v1.Environment` server (`http://host:port`, `https://` with TLS) that runs the
    /// environment; none = in the actor's process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Model turns per episode; an episode still going at the cap ends with the reward it has.
    pub max_turns: u32,
    /// Tokens after the prompt per episode, the model's and the environment's together; an
    /// episode that reaches it ends there, truncated (0: no cap but the turns'). Each turn is
    /// also capped by `sampling.max_new_tokens`.
    pub max_tokens: usize,
    /// Deadline of one call to a remote environment.
    pub timeout_ms: u64,
    /// Attempts at a call to a remote environment that failed transiently (unreachable, timed
    /// out) before the episode's group is dropped and counted.
    pub attempts: u32,
    /// How episodes are laid out for the model: `auto` renders the conversation with the
    /// model's own chat template when its directory has one (plain text otherwise), `none`
    /// always uses plain text, anything else is the path of a Jinja template file
    /// (docs/chat-templates.md).
    pub chat_template: String,
    /// A system message that opens every episode's conversation (with a chat template only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
}

impl Default for EpisodeConfig {
    fn default() -> Self {
        EpisodeConfig {
            env: "single".into(),
            url: None,
            max_turns: 8,
            max_tokens: 0,
            timeout_ms: 10_000,
            attempts: 4,
            chat_template: "auto".into(),
            system_prompt: None,
        }
    }
}

impl EpisodeConfig {
    /// The deadline of one environment call.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Where a run's rewards come from (docs/reward-model.md, "Serving"): the task's verifier
/// (the default, with no `rm`), or the scores of a reward model served over
/// `oxrl.v1.RewardModel` (`oxrl rm serve`) at `rm`, written `reward = { rm = "URL" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardConfig {
    /// An `oxrl.v1.RewardModel` server (`http://host:port`, `https://` with TLS); none = the
    /// verifier alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rm: Option<String>,
    /// How a sample's reward is made from the reward model's score (with `rm`).
    pub combine: RewardCombine,
    /// How a raw score becomes a reward.
    pub transform: ScoreTransform,
    /// Deadline of one call to the reward server.
    pub timeout_ms: u64,
    /// Attempts at a call that failed transiently (unreachable, timed out, busy) before the
    /// group is dropped and counted (`oxrl_rejected_total{reason="reward_model"}`).
    pub attempts: u32,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig {
            rm: None,
            combine: RewardCombine::Rm,
            transform: ScoreTransform::Sigmoid,
            timeout_ms: 10_000,
            attempts: 4,
        }
    }
}

impl RewardConfig {
    /// The deadline of one reward-server call.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// How the reward model's transformed score `s` and the verifier's reward `v` make a reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RewardCombine {
    /// `s` alone: for tasks without a checkable answer.
    #[default]
    #[serde(rename = "rm")]
    Rm,
    /// `v + s`: with the sigmoid (`0 < s < 1`) no wrong answer outranks a right one (they
    /// tie at worst, where the f32 sigmoid rounds), and the reward model orders the answers
    /// within each.
    #[serde(rename = "verifier+rm")]
    VerifierPlusRm,
}

/// How a raw score (the head's logit) becomes `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreTransform {
    /// `sigmoid(score)`: the probability of being right of an `oxrl rm train` model (binary
    /// cross-entropy), on the verifier's 0..1 scale.
    #[default]
    Sigmoid,
    /// The score itself (a reward model whose scores are not log-odds, e.g. Bradley-Terry).
    Raw,
}
