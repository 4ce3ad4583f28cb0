//! Per-prompt optimization (`per-prompt:N,STEPS`): test-time RL on one prompt at a time with
//! no reference answer, the self-consistency reward of TTRL (Zuo et al. 2025).
//!
//! For each prompt, from the starting weights: STEPS times, draw N samples with the current
//! weights, reward each 1 if its extracted answer equals the group's majority answer (the
//! vote of [`majority_vote`], the verifier's `extract`) and 0 otherwise, and take one learner
//! step on that group (a group that agrees throughout has zero variance: no step). The answer
//! is then the greedy completion of the adapted weights, scored against the reference like
//! every sampler's. The weights go back to the start before the next prompt.
//!
//! `rollout` cannot train, so the update is a [`TestTimeLearner`] the caller lends (`oxrl eval`
//! lends `learner::PerPromptLearner`, whose steps are `Learner::step`).

use super::vote::{majority_vote, Vote};
use crate::episode::{run_episodes, Episodes};
use crate::eval::{Drawn, Draws, EvalSet};
use crate::group::{GroupBatch, RolloutGroup, Sample};
use policy::{Policy, SamplingParams, Tokenizer};
use std::sync::Arc;
use std::time::Instant;
use tasks::{Problem, Verifier};

/// An error of the lent learner, carried as text into `policy::PolicyError::Input`.
pub type LearnerFailure = Box<dyn std::error::Error + Send + Sync>;

/// What per-prompt optimization needs from a learner: weights to sample with, one RL step on
/// groups whose rewards are set, and a way back to the starting weights.
pub trait TestTimeLearner {
    /// The policy over the current weights.
    fn policy(&self) -> &Policy;
    /// The version of the current weights (tokens sampled with them carry it).
    fn version(&self) -> u64;
    /// One update on `groups`; `false` when nothing was learnt (every group zero-variance).
    fn step(&mut self, groups: &[RolloutGroup]) -> Result<bool, LearnerFailure>;
    /// The starting weights again, a fresh optimizer and version 0.
    fn reset(&mut self) -> Result<(), LearnerFailure>;
}

/// Sets each sample's reward to 1 if its extracted answer is the majority answer of
/// `samples`, else 0 (a sample with no answer gets 0); returns the vote (`None`, and every
/// reward 0, when no sample has an answer).
pub fn self_consistency_rewards(samples: &mut [Sample], verifier: &dyn Verifier) -> Option<Vote> {
    let answers: Vec<Option<String>> = samples.iter().map(|s| verifier.extract(&s.text)).collect();
    let vote = majority_vote(&answers);
    for (s, a) in samples.iter_mut().zip(&answers) {
        let agrees = matches!((a, &vote), (Some(a), Some(v)) if *a == v.answer);
        s.reward = if agrees { 1.0 } else { 0.0 };
    }
    vote
}

/// How per-prompt optimization runs: its sizes and what it samples and scores with.
pub struct PerPromptRun<'a> {
    pub tok: &'a Tokenizer,
    pub episodes: &'a Episodes,
    /// Extracts answers for the vote, and scores the final answer against the reference.
    pub verifier: &'a Arc<dyn Verifier>,
    /// Samples per step (the group).
    pub n: usize,
    /// Learner steps per prompt.
    pub steps: usize,
    /// How each step's group is drawn; step s draws from [`step_seed`]`(seed, s)`.
    pub sampling: &'a SamplingParams,
}

/// What per-prompt optimization did on one prompt.
pub struct PromptAnswer {
    /// The greedy completion of the adapted weights.
    pub text: String,
    /// Its tokens and their log-probs under the adapted weights.
    pub completion: Vec<u32>,
    pub logprobs: Vec<f32>,
    /// Its reward against the reference answer.
    pub reward: f32,
    /// Tokens generated: every step's samples and the answer.
    pub tokens: usize,
    /// Steps that changed the weights (a group that agrees throughout changes nothing).
    pub updates: usize,
}

/// Seed of the group step `step` draws (the problem's id is mixed in by `run_episodes`, so a
/// prompt draws the same whatever was optimized before it).
pub fn step_seed(seed: u64, step: usize) -> u64 {
    seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl PerPromptRun<'_> {
    /// Resets `learner`, optimizes it on `problem` and returns its greedy answer.
    pub fn answer(
        &self,
        learner: &mut dyn TestTimeLearner,
        problem: &Problem,
    ) -> policy::Result<PromptAnswer> {
        let failed = |e: LearnerFailure| {
            policy::PolicyError::Input(format!("per-prompt optimization on {}: {e}", problem.id))
        };
        learner.reset().map_err(failed)?;
        let (mut tokens, mut updates) = (0, 0);
        for step in 0..self.steps {
            let ids = [format!("{}/per-prompt-{step}", problem.id)];
            let batch = GroupBatch {
                problems: std::slice::from_ref(problem),
                ids: &ids,
                group_size: self.n,
            };
            let params = SamplingParams {
                seed: step_seed(self.sampling.seed, step),
                ..self.sampling.clone()
            };
            // This step's weights with their transposed copies, for decoding.
            let sampler = learner.policy().for_sampling()?;
            let hook = &mut policy::FixedWeights {
                policy: &sampler,
                version: learner.version(),
            };
            let outcome = run_episodes(hook, self.tok, self.episodes, batch, &params)?
                .expect("fixed weights never stop decoding");
            if let Some(d) = outcome.dropped.first() {
                return Err(policy::PolicyError::Input(format!(
                    "per-prompt optimization on {}: its environment failed ({}): {}",
                    problem.id,
                    d.error.reason(),
                    d.error
                )));
            }
            let mut groups = outcome.groups;
            for g in &mut groups {
                tokens += g.num_tokens();
                // The reference answer's reward is overwritten: only agreement counts.
                self_consistency_rewards(&mut g.samples, self.verifier.as_ref());
            }
            updates += learner.step(&groups).map_err(failed)? as usize;
        }
        let greedy = SamplingParams {
            temperature: 0.0,
            ..self.sampling.clone()
        };
        let sampler = learner.policy().for_sampling()?;
        let set = EvalSet {
            policy: &sampler,
            tok: self.tok,
            problems: std::slice::from_ref(problem),
            verifier: self.verifier,
            episodes: self.episodes,
            batch_rows: 1,
            on_problems: &|_| {},
        };
        let mut drawn = set.sample(1, &greedy)?;
        tokens += drawn.tokens;
        let answer = drawn
            .per_problem
            .pop()
            .and_then(|mut samples| samples.pop())
            .expect("one greedy completion of one problem");
        Ok(PromptAnswer {
            text: answer.text,
            completion: answer.tokens,
            logprobs: answer.logprobs,
            reward: answer.reward,
            tokens,
            updates,
        })
    }
}

impl EvalSet<'_> {
    /// `per-prompt:N,STEPS` on every problem: one greedy answer each, after optimizing on it
    /// alone from the starting weights.
    pub fn per_prompt(
        &self,
        learner: &mut dyn TestTimeLearner,
        n: usize,
        steps: usize,
        sampling: &SamplingParams,
    ) -> policy::Result<Draws> {
        let started = Instant::now();
        let run = PerPromptRun {
            tok: self.tok,
            episodes: self.episodes,
            verifier: self.verifier,
            n,
            steps,
            sampling,
        };
        let (mut per_problem, mut tokens, mut updates) = (Vec::new(), 0, 0);
        for p in self.problems {
            let a = run.answer(learner, p)?;
            tokens += a.tokens;
            updates += a.updates;
            per_problem.push(vec![Drawn {
                text: a.text,
                tokens: a.completion,
                logprobs: a.logprobs,
                reward: a.reward,
            }]);
            (self.on_problems)(per_problem.len());
        }
        tracing::info!(
            problems = per_problem.len(),
            updates,
            "per-prompt optimization done"
        );
        learner.reset().map_err(|e| {
            policy::PolicyError::Input(format!("per-prompt optimization: resetting: {e}"))
        })?;
        Ok(Draws {
            per_problem,
            tokens,
            wall_s: started.elapsed().as_secs_f64(),
            at_t1: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasks::NumericVerifier;

    fn sample(text: &str, reward: f32) -> Sample {
        Sample {
            tokens: vec![1],
            logprobs: vec![-0.5],
            versions: vec![0],
            mask: Vec::new(),
            turns: 1,
            reward,
            truncated: false,
            text: text.into(),
        }
    }

    #[test]
    fn the_reward_is_agreement_with_the_majority_not_correctness() {
        // Correctness rewards (the reference is 42) are overwritten by agreement with "41".
        let mut samples = vec![
            sample("41", 0.0),
            sample("42", 1.0),
            sample("the sum is 41", 0.0),
            sample("no idea", 0.0),
            sample("7", 0.0),
        ];
        let vote = self_consistency_rewards(&mut samples, &NumericVerifier).unwrap();
        assert_eq!((vote.answer.as_str(), vote.votes), ("41", 2));
        let rewards: Vec<f32> = samples.iter().map(|s| s.reward).collect();
        assert_eq!(rewards, [1.0, 0.0, 1.0, 0.0, 0.0]);
        // Nobody answers: no majority, every reward 0 (a zero-variance group).
        let mut silent = vec![sample("?", 1.0), sample("!", 1.0)];
        assert_eq!(
            self_consistency_rewards(&mut silent, &NumericVerifier),
            None
        );
        assert!(silent.iter().all(|s| s.reward == 0.0));
        // All agree: every reward 1.
        let mut agree = vec![sample("3", 0.0), sample("3", 0.0)];
        self_consistency_rewards(&mut agree, &NumericVerifier);
        assert!(agree.iter().all(|s| s.reward == 1.0));
    }
}
