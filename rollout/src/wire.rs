//! Conversions between rollout groups and their `oxrl.v1` wire form. Validation of the
//! content (finite log-probs, lengths, vocabulary) is `RolloutGroup::validate`'s job.

use crate::group::{RolloutGroup, Sample};

/// The wire form of `group`, delivered under `lease_id`.
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
