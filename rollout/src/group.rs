//! Rollout groups: G scored episodes of one prompt (the unit the learner trains on), their
//! validation, and the batch of problems the episode engine (`episode/`) makes groups of,
//! each under the id its caller gives it.

use serde::{Deserialize, Serialize};
use tasks::Problem;

/// One scored completion, or one multi-turn episode: every token after the prompt, the
/// model's turns and the environment's answers between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Token ids after the prompt (each turn's stop token included when it stopped).
    pub tokens: Vec<u32>,
    /// Log-prob of each model token under the policy that generated it (`logp_gen`); the
    /// environment's tokens carry none.
    pub logprobs: Vec<f32>,
    /// Policy version that generated each model token.
    pub versions: Vec<u64>,
    /// Per token: true where the model produced it, false where an environment did. Empty
    /// when every token is the model's (one turn).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mask: Vec<bool>,
    /// Model turns in the episode (1 for a single-turn task).
    #[serde(default = "one_turn")]
    pub turns: u32,
    /// Verifier reward, 0.0 or 1.0.
    pub reward: f32,
    /// Whether the completion hit the length budget (scored as it stands).
    pub truncated: bool,
    /// Decoded completion text (special tokens left out).
    pub text: String,
}

fn one_turn() -> u32 {
    1
}

impl Sample {
    /// Whether token `k` is the model's (environment tokens are context only).
    pub fn is_model(&self, k: usize) -> bool {
        self.mask.get(k).copied().unwrap_or(true)
    }

    /// Tokens the model produced: those that carry a log-prob, a version, a gradient.
    pub fn model_tokens(&self) -> usize {
        if self.mask.is_empty() {
            self.tokens.len()
        } else {
            self.mask.iter().filter(|&&m| m).count()
        }
    }

    /// Tokens an environment added.
    pub fn env_tokens(&self) -> usize {
        self.tokens.len() - self.model_tokens().min(self.tokens.len())
    }
}

/// G completions of one prompt: the unit the learner trains on and deduplicates by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutGroup {
    /// Unique id of this group (a group is trained on at most once).
    pub group_id: String,
    /// The problem it answers.
    pub problem_id: String,
    /// Prompt token ids.
    pub prompt_tokens: Vec<u32>,
    /// The completions.
    pub samples: Vec<Sample>,
}

/// Why a group cannot be trained on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GroupError {
    #[error("group has no samples")]
    Empty,
    #[error("group has an empty prompt")]
    EmptyPrompt,
    #[error("sample {0} has no model tokens")]
    EmptySample(usize),
    #[error("sample {sample}: {tokens} tokens but a mask of {mask} entries")]
    MaskMismatch {
        sample: usize,
        tokens: usize,
        mask: usize,
    },
    #[error(
        "sample {sample}: {tokens} model tokens but {logprobs} log-probs and {versions} versions"
    )]
    LengthMismatch {
        sample: usize,
        tokens: usize,
        logprobs: usize,
        versions: usize,
    },
    #[error("sample {sample}: log-prob {value} at token {index} is not a finite value <= 0")]
    BadLogprob {
        sample: usize,
        index: usize,
        value: f32,
    },
    #[error("sample {sample}: reward {value} is not finite")]
    BadReward { sample: usize, value: f32 },
    #[error("token id {id} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfVocab { id: u32, vocab_size: usize },
}

impl RolloutGroup {
    /// Checks everything the learner relies on; a bad group never reaches the weights.
    pub fn validate(&self, vocab_size: usize) -> Result<(), GroupError> {
        if self.samples.is_empty() {
            return Err(GroupError::Empty);
        }
        if self.prompt_tokens.is_empty() {
            return Err(GroupError::EmptyPrompt);
        }
        let oov = |ids: &[u32]| ids.iter().copied().find(|&i| i as usize >= vocab_size);
        if let Some(id) = oov(&self.prompt_tokens) {
            return Err(GroupError::TokenOutOfVocab { id, vocab_size });
        }
        for (i, s) in self.samples.iter().enumerate() {
            if !s.mask.is_empty() && s.mask.len() != s.tokens.len() {
                return Err(GroupError::MaskMismatch {
                    sample: i,
                    tokens: s.tokens.len(),
                    mask: s.mask.len(),
                });
            }
            let model = s.model_tokens();
            if model == 0 {
                return Err(GroupError::EmptySample(i));
            }
            if s.logprobs.len() != model || s.versions.len() != model {
                return Err(GroupError::LengthMismatch {
                    sample: i,
                    tokens: model,
                    logprobs: s.logprobs.len(),
                    versions: s.versions.len(),
                });
            }
            if let Some((index, &value)) = s
                .logprobs
                .iter()
                .enumerate()
                .find(|(_, v)| !v.is_finite() || **v > 1e-4)
            {
                return Err(GroupError::BadLogprob {
                    sample: i,
                    index,
                    value,
                });
            }
            if !s.reward.is_finite() {
                return Err(GroupError::BadReward {
                    sample: i,
                    value: s.reward,
                });
            }
            if let Some(id) = oov(&s.tokens) {
                return Err(GroupError::TokenOutOfVocab { id, vocab_size });
            }
        }
        Ok(())
    }

    /// Mean reward of the group.
    pub fn mean_reward(&self) -> f32 {
        self.samples.iter().map(|s| s.reward).sum::<f32>() / self.samples.len().max(1) as f32
    }

    /// Whether every sample got the same reward (no learning signal).
    pub fn zero_variance(&self) -> bool {
        self.samples.windows(2).all(|w| w[0].reward == w[1].reward)
    }

    /// Model tokens in the group (environment tokens are context and not counted).
    pub fn num_tokens(&self) -> usize {
        self.samples.iter().map(Sample::model_tokens).sum()
    }
}

/// The problems to sample one group each for, and the id each group carries.
#[derive(Debug, Clone, Copy)]
pub struct GroupBatch<'a> {
    pub problems: &'a [Problem],
    /// `ids[i]` names the group of `problems[i]` (the learner trains on a group id once).
    pub ids: &'a [String],
    /// Completions per problem (G).
    pub group_size: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> RolloutGroup {
        let s = |r: f32| Sample {
            tokens: vec![5, 2],
            logprobs: vec![-0.5, -0.1],
            versions: vec![0, 0],
            mask: Vec::new(),
            turns: 1,
            reward: r,
            truncated: false,
            text: "x".into(),
        };
        RolloutGroup {
            group_id: "g".into(),
            problem_id: "p".into(),
            prompt_tokens: vec![4, 5],
            samples: vec![s(1.0), s(0.0)],
        }
    }

    #[test]
    fn validation_rejects_each_kind_of_bad_group() {
        assert_eq!(group().validate(10), Ok(()));
        let mut g = group();
        g.samples[1].logprobs[0] = f32::NAN;
        assert!(matches!(
            g.validate(10),
            Err(GroupError::BadLogprob {
                sample: 1,
                index: 0,
                ..
            })
        ));
        let mut g = group();
        g.samples[0].logprobs.pop();
        assert!(matches!(
            g.validate(10),
            Err(GroupError::LengthMismatch { .. })
        ));
        let mut g = group();
        g.samples[0].reward = f32::INFINITY;
        assert!(matches!(g.validate(10), Err(GroupError::BadReward { .. })));
        let mut g = group();
        g.samples[0].tokens[0] = 99;
        assert!(matches!(
            g.validate(10),
            Err(GroupError::TokenOutOfVocab { id: 99, .. })
        ));
        let mut g = group();
        g.samples.clear();
        assert_eq!(g.validate(10), Err(GroupError::Empty));
        let mut g = group();
        g.prompt_tokens.clear();
        assert_eq!(g.validate(10), Err(GroupError::EmptyPrompt));
        let mut g = group();
        g.samples[1].tokens.clear();
        g.samples[1].logprobs.clear();
        g.samples[1].versions.clear();
        assert_eq!(g.validate(10), Err(GroupError::EmptySample(1)));
    }

    #[test]
    fn an_episode_mask_must_cover_every_token_and_log_probs_only_the_model_ones() {
        // Model 5 2, environment 7 7, model 3: three log-probs and versions, five tokens.
        let mut g = group();
        let s = &mut g.samples[0];
        s.tokens = vec![5, 2, 7, 7, 3];
        s.mask = vec![true, true, false, false, true];
        s.logprobs = vec![-0.5, -0.1, -0.2];
        s.versions = vec![0, 0, 1];
        assert_eq!(g.validate(10), Ok(()));
        assert_eq!(g.samples[0].model_tokens(), 3);
        assert_eq!(g.samples[0].env_tokens(), 2);
        assert_eq!(g.num_tokens(), 3 + 2);
        let mut bad = g.clone();
        bad.samples[0].mask.pop();
        assert_eq!(
            bad.validate(10),
            Err(GroupError::MaskMismatch {
                sample: 0,
                tokens: 5,
                mask: 4
            })
        );
        let mut bad = g.clone();
        bad.samples[0].logprobs.push(-0.3);
        assert!(matches!(
            bad.validate(10),
            Err(GroupError::LengthMismatch { tokens: 3, .. })
        ));
        let mut bad = g;
        bad.samples[0].mask = vec![false; 5];
        assert_eq!(bad.validate(10), Err(GroupError::EmptySample(0)));
    }

    #[test]
    fn zero_variance_and_mean() {
        let g = group();
        assert!(!g.zero_variance());
        assert_eq!(g.mean_reward(), 0.5);
        let mut g = group();
        g.samples[1].reward = 1.0;
        assert!(g.zero_variance());
    }
}
