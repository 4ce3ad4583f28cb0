//! The pipeline's one staleness rule (PipelineRL-k, DESIGN.md section 6): the lag of a token is
//! the version it is trained on (or generated against) minus the version that sampled it, and
//! a token is stale under the bound k when its lag exceeds k. The coordinator's lease grant,
//! the actor's lag gate, the learner's queue exit and its step all ask this module, so the
//! four places agree by construction.

use crate::RolloutGroup;

/// Lag in versions of a token sampled with `sampled_with` when the policy is at `current`
/// (0 when the sampler is ahead, e.g. a learner restarted behind its actors).
pub fn lag(sampled_with: u64, current: u64) -> u64 {
    current.saturating_sub(sampled_with)
}

/// The largest lag of any token of `group` if it were trained at `current` (0 for no tokens).
pub fn group_lag(group: &RolloutGroup, current: u64) -> u64 {
    group
        .samples
        .iter()
        .flat_map(|s| &s.versions)
        .map(|&v| lag(v, current))
        .max()
        .unwrap_or(0)
}

/// The lag bound k: how many versions a token may trail the policy it trains or is generated
/// against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagBound(pub u64);

impl LagBound {
    /// True when a lag of `lag` versions is past the bound.
    pub fn exceeded_by(self, lag: u64) -> bool {
        lag > self.0
    }

    /// True when weights (or a token) of version `sampled_with` are stale against `current`:
    /// an actor holding them may not lease or decode, a token sampled with them may not train.
    pub fn is_stale(self, sampled_with: u64, current: u64) -> bool {
        self.exceeded_by(lag(sampled_with, current))
    }

    /// True when some token of `group` is stale if trained at `current`.
    pub fn group_is_stale(self, group: &RolloutGroup, current: u64) -> bool {
        self.exceeded_by(group_lag(group, current))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sample;

    fn group(versions: &[&[u64]]) -> RolloutGroup {
        RolloutGroup {
            group_id: "g".into(),
            problem_id: "p".into(),
            prompt_tokens: vec![1],
            samples: versions
                .iter()
                .map(|v| Sample {
                    tokens: vec![2; v.len()],
                    logprobs: vec![-0.5; v.len()],
                    versions: v.to_vec(),
                    reward: 0.0,
                    truncated: false,
                    mask: Vec::new(),
                    turns: 1,
                    text: String::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn lag_is_versions_behind_and_never_negative() {
        assert_eq!(lag(3, 5), 2);
        assert_eq!(lag(5, 5), 0);
        assert_eq!(lag(7, 5), 0);
    }

    #[test]
    fn stale_means_more_than_k_versions_behind() {
        let k = LagBound(2);
        assert!(!k.is_stale(3, 5), "lag 2 is allowed under k = 2");
        assert!(k.is_stale(2, 5), "lag 3 is not");
        assert!(!k.is_stale(9, 5), "ahead of the learner is not stale");
        assert!(!LagBound(0).is_stale(5, 5));
        assert!(LagBound(0).is_stale(4, 5));
        assert!(!LagBound(u64::MAX).is_stale(0, u64::MAX));
    }

    #[test]
    fn a_group_is_as_old_as_its_oldest_token() {
        let g = group(&[&[4, 5, 5], &[3, 3]]);
        assert_eq!(group_lag(&g, 5), 2);
        assert!(!LagBound(2).group_is_stale(&g, 5));
        assert!(LagBound(1).group_is_stale(&g, 5));
        assert_eq!(group_lag(&group(&[]), 9), 0);
    }
}
