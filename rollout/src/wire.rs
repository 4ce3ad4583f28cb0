//! Conversions between rollout groups and their `oxrl.v1` wire form. Validation of the
//! content (finite log-probs, lengths, vocabulary) is `RolloutGroup::validate`'s job.

use crate::group::{RolloutGroup, Sample};

/// The wire form of `group`, delivered under `lease_id` (its lineage not stated: the actor
/// sets it).
pub fn to_wire(group: &RolloutGroup, lease_id: &str) -> proto::RolloutGroup {
    proto::RolloutGroup {
        group_id: group.group_id.clone(),
        lease_id: lease_id.to_string(),
        problem_id: group.problem_id.clone(),
        prompt_tokens: group.prompt_tokens.clone(),
        samples: group
            .samples
            .iter()
            .map(|s| proto::Sample {
                tokens: s.tokens.clone(),
                logprobs: s.logprobs.clone(),
                versions: s.versions.clone(),
                reward: s.reward,
                truncated: s.truncated,
                text: s.text.clone(),
                mask: s.mask.clone(),
                turns: s.turns,
            })
            .collect(),
        lineage: 0,
    }
}

/// The lease id and group of a wire message.
pub fn from_wire(msg: proto::RolloutGroup) -> (String, RolloutGroup) {
    let group = RolloutGroup {
        group_id: msg.group_id,
        problem_id: msg.problem_id,
        prompt_tokens: msg.prompt_tokens,
        samples: msg
            .samples
            .into_iter()
            .map(|s| Sample {
                tokens: s.tokens,
                logprobs: s.logprobs,
                versions: s.versions,
                reward: s.reward,
                truncated: s.truncated,
                text: s.text,
                mask: s.mask,
                turns: s.turns.max(1),
            })
            .collect(),
    };
    (msg.lease_id, group)
}

#[cfg(test)]
mod props {
    //! Whatever a peer sends as a rollout group, the learner's intake (`from_wire`, then
    //! `validate`) answers with a value or an error, never a panic; and what passes
    //! validation is safe for everything the learner does with it next.

    use super::*;
    use proptest::prelude::*;

    const VOCAB: usize = 64;

    /// Floats a hostile or broken actor might send: ordinary log-probs, positives, NaN, inf.
    fn any_logprob() -> impl Strategy<Value = f32> {
        prop_oneof![
            4 => -20.0f32..0.0,
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
            1 => 0.0f32..10.0,
            1 => any::<f32>(),
        ]
    }

    fn any_sample() -> impl Strategy<Value = proto::Sample> {
        (
            proptest::collection::vec(0u32..(VOCAB as u32 + 8), 0..12),
            proptest::collection::vec(any_logprob(), 0..12),
            proptest::collection::vec(any::<u64>(), 0..12),
            any_logprob(),
            any::<bool>(),
            ".{0,8}",
            proptest::collection::vec(any::<bool>(), 0..12),
            any::<u32>(),
        )
            .prop_map(
                |(tokens, logprobs, versions, reward, truncated, text, mask, turns)| {
                    proto::Sample {
                        tokens,
                        logprobs,
                        versions,
                        reward,
                        truncated,
                        text,
                        mask,
                        turns,
                    }
                },
            )
    }

    fn any_group() -> impl Strategy<Value = proto::RolloutGroup> {
        (
            ".{0,12}",
            ".{0,12}",
            ".{0,12}",
            proptest::collection::vec(0u32..(VOCAB as u32 + 8), 0..8),
            proptest::collection::vec(any_sample(), 0..5),
        )
            .prop_map(|(group_id, lease_id, problem_id, prompt_tokens, samples)| {
                proto::RolloutGroup {
                    group_id,
                    lease_id,
                    problem_id,
                    prompt_tokens,
                    samples,
                    lineage: 0,
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_wire_group_is_accepted_or_refused_without_a_panic(msg in any_group(), current in any::<u64>()) {
            let (_, group) = from_wire(msg);
            if group.validate(VOCAB).is_ok() {
                // What the learner does next with an accepted group.
                prop_assert!(group.samples.iter().all(|s| s.logprobs.iter().all(|l| l.is_finite() && *l <= 1e-4)));
                prop_assert!(group.samples.iter().all(|s| s.reward.is_finite()));
                prop_assert!(group.prompt_tokens.iter().all(|&t| (t as usize) < VOCAB));
                let _ = crate::staleness::group_lag(&group, current);
                let _ = (group.mean_reward(), group.zero_variance(), group.num_tokens());
                for s in &group.samples {
                    prop_assert_eq!(s.model_tokens(), s.logprobs.len());
                    prop_assert_eq!(s.model_tokens() + s.env_tokens(), s.tokens.len());
                }
            }
        }
    }
}
