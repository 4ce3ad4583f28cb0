//! The learner that per-prompt optimization (`oxrl eval --sampler per-prompt:N,STEPS`,
//! `rollout::ttc::per_prompt`) trains: `Learner::step` on each prompt's self-consistency
//! groups, and the starting weights and a fresh optimizer back before every prompt (copied
//! from memory, not reloaded from disk).

use crate::checkpoint;
use crate::error::Result;
use crate::params::TrainableModel;
use crate::update::{Learner, UpdateConfig};
use crate::AdamW;
use policy::{Policy, Weights};
use rollout::ttc::per_prompt::LearnerFailure;
use rollout::ttc::TestTimeLearner;
use rollout::RolloutGroup;

/// Per-prompt optimization's default learning rate, a third of the run config's `[update] lr`
/// default: at 3e-4, per-prompt:8,2 took the default model's greedy 0.906 on addition:2 down
/// to 0.604, at 1e-4 to 0.892 (docs/test-time-compute.md).
pub const PER_PROMPT_LR: f64 = 1e-4;

/// The update per-prompt optimization takes: the run config's `[update]` defaults (CISPO,
/// AdamW, clipping at 1) at `lr`, without warm-up (a handful of steps would all be warm-up).
pub fn per_prompt_update(lr: f64) -> UpdateConfig {
    UpdateConfig {
        lr,
        warmup: 0,
        ..UpdateConfig::default()
    }
}

/// A learner over a model that can always go back to the weights it started from.
pub struct PerPromptLearner {
    learner: Learner,
    start: Weights,
}

impl PerPromptLearner {
    /// Trains `model` with `config`; `reset` returns to `model`'s current weights.
    pub fn new(model: TrainableModel, config: UpdateConfig) -> Result<Self> {
        let start = model.snapshot()?;
        Ok(PerPromptLearner {
            learner: Learner::new(model, config, 0),
            start,
        })
    }

    /// The model being trained (its current weights).
    pub fn model(&self) -> &TrainableModel {
        &self.learner.model
    }

    /// The weights it returns to.
    pub fn start(&self) -> &Weights {
        &self.start
    }
}

impl TestTimeLearner for PerPromptLearner {
    fn policy(&self) -> &Policy {
        self.learner.model.policy()
    }

    fn version(&self) -> u64 {
        self.learner.version()
    }

    fn step(&mut self, groups: &[RolloutGroup]) -> std::result::Result<bool, LearnerFailure> {
        let report = self.learner.step(groups)?;
        checkpoint::ensure_finite(&self.learner.model, report.version)?;
        Ok(report.tokens > 0)
    }

    fn reset(&mut self) -> std::result::Result<(), LearnerFailure> {
        self.learner.model.set_weights(&self.start)?;
        self.learner.optimizer = AdamW::new(self.learner.config.optimizer.clone());
        self.learner.set_version(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollout::ttc::{PerPromptRun, PromptAnswer};
    use std::sync::Arc;
    use tasks::{Problem, Split};

    fn learner() -> PerPromptLearner {
        let m = policy::default_model::embedded().unwrap();
        let model = TrainableModel::new(m.config, m.tokenizer, &m.weights).unwrap();
        PerPromptLearner::new(model, per_prompt_update(PER_PROMPT_LR)).unwrap()
    }

    /// Largest absolute difference between two sets of weights.
    fn distance(a: &Weights, b: &Weights) -> f32 {
        a.iter()
            .map(|(name, t)| {
                (t - &b[name])
                    .unwrap()
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            })
            .fold(0.0, f32::max)
    }

    /// Answers `problem` with per-prompt:8,`steps` (temperature 1, seed 7).
    fn answer(l: &mut PerPromptLearner, problem: &Problem, steps: usize) -> PromptAnswer {
        let source = tasks::from_spec("addition:2", 0, &tasks::VerifierRegistry::new()).unwrap();
        let verifier = source.verifier();
        let tok = l.model().tokenizer.clone();
        let episodes = rollout::Episodes::single(Arc::clone(&verifier));
        let sampling = policy::SamplingParams {
            temperature: 1.0,
            max_new_tokens: 12,
            stop_tokens: tok.eos_ids(),
            seed: 7,
            ..Default::default()
        };
        let run = PerPromptRun {
            tok: &tok,
            episodes: &episodes,
            verifier: &verifier,
            n: 8,
            steps,
            sampling: &sampling,
        };
        run.answer(l, problem).unwrap()
    }

    #[test]
    fn a_disagreeing_prompt_moves_the_weights_and_the_next_prompt_starts_over() {
        let source = tasks::from_spec("addition:2", 0, &tasks::VerifierRegistry::new()).unwrap();
        let problems: Vec<Problem> = (0..9).map(|i| source.problem(Split::Eval, i)).collect();
        let mut l = learner();
        // The first prompt whose samples disagree: its steps change the weights.
        let (first, a) = problems[..8]
            .iter()
            .enumerate()
            .map(|(i, p)| (i, answer(&mut l, p, 2)))
            .find(|(_, a)| a.updates > 0)
            .expect("some prompt of 8 has samples that disagree");
        assert!(distance(&l.model().snapshot().unwrap(), l.start()) > 0.0);
        // 2 steps of 8 samples of at least one token each, and the answer.
        assert!(a.tokens >= 2 * 8 + a.completion.len(), "{}", a.tokens);
        // The next prompt from the adapted weights equals it from a fresh learner: reset
        // restored the weights and the optimizer, bit for bit.
        let next = &problems[first + 1];
        let after = answer(&mut l, next, 2);
        let mut fresh = learner();
        let alone = answer(&mut fresh, next, 2);
        assert_eq!(after.text, alone.text);
        assert_eq!(after.completion, alone.completion);
        assert_eq!(after.logprobs, alone.logprobs);
        assert_eq!((after.tokens, after.updates), (alone.tokens, alone.updates));
        assert_eq!(
            distance(
                &l.model().snapshot().unwrap(),
                &fresh.model().snapshot().unwrap()
            ),
            0.0
        );
        l.reset().unwrap();
        assert_eq!(distance(&l.model().snapshot().unwrap(), l.start()), 0.0);
        assert_eq!(l.version(), 0);
    }

    #[test]
    fn no_steps_is_the_greedy_answer_of_the_starting_weights() {
        let source = tasks::from_spec("addition:2", 0, &tasks::VerifierRegistry::new()).unwrap();
        let p = source.problem(Split::Eval, 0);
        let mut l = learner();
        let a = answer(&mut l, &p, 0);
        assert_eq!(a.updates, 0);
        assert_eq!(a.tokens, a.completion.len());
        assert_eq!(distance(&l.model().snapshot().unwrap(), l.start()), 0.0);
    }
}
