//! Rewards from a reward model's scores (a run's `reward = { rm = "URL" }`): which tokens a
//! group's samples are scored on (prompt and completion, as the model was shown them, as
//! `oxrl rm train` trained on them), and how a raw score becomes a sample's reward
//! ([`RewardConfig`]'s transform and combination with the verifier's reward). Pure logic:
//! the scores come from the caller (the actor and the synchronous loop, through
//! `reward_service::RewardClient`).

use crate::config::{RewardCombine, RewardConfig, ScoreTransform};
use crate::group::RolloutGroup;

/// Why scores cannot become a group's rewards.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoresError {
    #[error("{scores} scores for a group of {samples} samples")]
    Count { scores: usize, samples: usize },
    #[error("score {value} of sample {sample} gives a reward that is not finite")]
    NotFinite { sample: usize, value: f32 },
}

/// What the reward model scores of each sample of `group`: prompt tokens then the sample's.
pub fn sequences(group: &RolloutGroup) -> Vec<Vec<u32>> {
    group
        .samples
        .iter()
        .map(|s| {
            group
                .prompt_tokens
                .iter()
                .chain(&s.tokens)
                .copied()
                .collect()
        })
        .collect()
}

/// The reward of a sample whose verifier reward is `verifier` and raw score `score`.
pub fn reward(verifier: f32, score: f32, cfg: &RewardConfig) -> f32 {
    let s = match cfg.transform {
        ScoreTransform::Sigmoid => 1.0 / (1.0 + (-score).exp()),
        ScoreTransform::Raw => score,
    };
    match cfg.combine {
        RewardCombine::Rm => s,
        RewardCombine::VerifierPlusRm => verifier + s,
    }
}

/// Replaces the rewards of `group`'s samples (the verifier's) with the ones `scores` (one per
/// sample, in order) make; on an error the group is left as it was.
pub fn apply_scores(
    group: &mut RolloutGroup,
    scores: &[f32],
    cfg: &RewardConfig,
) -> Result<(), ScoresError> {
    if scores.len() != group.samples.len() {
        return Err(ScoresError::Count {
            scores: scores.len(),
            samples: group.samples.len(),
        });
    }
    let rewards: Vec<f32> = group
        .samples
        .iter()
        .zip(scores)
        .map(|(s, &score)| reward(s.reward, score, cfg))
        .collect();
    if let Some(sample) = rewards.iter().position(|r| !r.is_finite()) {
        return Err(ScoresError::NotFinite {
            sample,
            value: scores[sample],
        });
    }
    for (s, r) in group.samples.iter_mut().zip(rewards) {
        s.reward = r;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::Sample;

    fn group(rewards: &[f32]) -> RolloutGroup {
        RolloutGroup {
            group_id: "g".into(),
            problem_id: "p".into(),
            prompt_tokens: vec![5, 6],
            samples: rewards
                .iter()
                .enumerate()
                .map(|(i, &reward)| Sample {
                    tokens: vec![7 + i as u32],
                    logprobs: vec![-0.5],
                    versions: vec![0],
                    mask: vec![],
                    turns: 1,
                    reward,
                    truncated: false,
                    text: String::new(),
                })
                .collect(),
        }
    }

    fn cfg(combine: RewardCombine, transform: ScoreTransform) -> RewardConfig {
        RewardConfig {
            rm: Some("http://h:1".into()),
            combine,
            transform,
            ..RewardConfig::default()
        }
    }

    #[test]
    fn scores_become_rewards_as_documented() {
        let sig = cfg(RewardCombine::Rm, ScoreTransform::Sigmoid);
        assert_eq!(reward(1.0, 0.0, &sig), 0.5);
        assert!((reward(0.0, 2.0, &sig) - 0.880_797).abs() < 1e-6);
        let raw = cfg(RewardCombine::Rm, ScoreTransform::Raw);
        assert_eq!(reward(1.0, -3.5, &raw), -3.5);
        let both = cfg(RewardCombine::VerifierPlusRm, ScoreTransform::Sigmoid);
        // Every right answer outranks every wrong one, whatever their scores (past |score|
        // ~17 the f32 sigmoid rounds to 0 or 1: a tie at worst, never the other order).
        assert!(reward(1.0, -10.0, &both) > reward(0.0, 10.0, &both));
        assert!(reward(1.0, -30.0, &both) >= reward(0.0, 30.0, &both));
        assert_eq!(reward(1.0, 0.0, &both), 1.5);
    }

    #[test]
    fn a_group_is_scored_on_prompt_and_completion_and_keeps_its_rewards_on_garbage() {
        let mut g = group(&[0.0, 1.0]);
        assert_eq!(sequences(&g), vec![vec![5, 6, 7], vec![5, 6, 8]]);
        let both = cfg(RewardCombine::VerifierPlusRm, ScoreTransform::Raw);
        let e = apply_scores(&mut g, &[0.1], &both).unwrap_err();
        assert_eq!(
            e,
            ScoresError::Count {
                scores: 1,
                samples: 2
            }
        );
        let e = apply_scores(&mut g, &[0.1, f32::NAN], &both).unwrap_err();
        assert!(matches!(e, ScoresError::NotFinite { sample: 1, .. }), "{e}");
        assert_eq!(g, group(&[0.0, 1.0]));
        apply_scores(&mut g, &[0.25, -0.5], &both).unwrap();
        let rewards: Vec<f32> = g.samples.iter().map(|s| s.reward).collect();
        assert_eq!(rewards, [0.25, 0.5]);
    }
}
