//! The curriculum of the synchronous loop: the same finite training pool walked in epochs and
//! the same No-Positive-Resampling rule (a prompt whose pass rate over its recent samples
//! reaches `retire_pass_rate` is never sampled again) as the pipeline's coordinator, so that
//! `oxrl run --sync` and `oxrl run` differ only in the pipeline. Saved with each checkpoint
//! (`curriculum.json`) so a resumed run walks on from where it stopped.

use crate::error::{LearnerError, Result};
use rollout::config::RunConfig;
use rollout::curriculum::{Curriculum, TrainPool};
use rollout::RolloutGroup;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tasks::{Problem, ProblemSource, Split};

/// File name of the saved curriculum inside a checkpoint directory.
const FILE: &str = "curriculum.json";

/// Where the walk stands and what each prompt's recent pass rate is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncCurriculum {
    pool: TrainPool,
    pass_rates: Curriculum,
}

/// The pool's figures after a step, for `metrics.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStats {
    /// Prompts that may still be sampled.
    pub pool_active: u64,
    /// Prompts retired by the curriculum.
    pub pool_retired: u64,
    /// Passes over the pool completed.
    pub epoch: u64,
}

impl SyncCurriculum {
    /// A fresh walk over `source`'s training pool with the run's retirement rule.
    pub fn new(cfg: &RunConfig, source: &dyn ProblemSource) -> Result<Self> {
        let p = &cfg.pipeline;
        rollout::curriculum::check_rule(
            p.retire_pass_rate,
            p.retire_min_samples,
            p.pass_rate_window,
        )
        .map_err(|(field, message)| LearnerError::Config(format!("{field}: {message}")))?;
        Ok(Self {
            pool: TrainPool::new(source.len(Split::Train), cfg.epochs),
            pass_rates: Curriculum::new(
                p.retire_pass_rate,
                p.retire_min_samples,
                p.pass_rate_window,
            ),
        })
    }

    /// The curriculum saved in checkpoint `dir`, or a fresh one when it holds none (a
    /// checkpoint written before curricula were saved).
    pub fn load_or_new(cfg: &RunConfig, source: &dyn ProblemSource, dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        if !path.exists() {
            return Self::new(cfg, source);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| LearnerError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| LearnerError::Checkpoint {
            path: path.clone(),
            message: format!("unreadable curriculum: {e}"),
        })
    }

    /// Writes the curriculum into checkpoint directory `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE);
        let text = serde_json::to_string(self).expect("curriculum serialises");
        std::fs::write(&path, text).map_err(|e| LearnerError::io(&path, e))
    }

    /// The next `n` training problems of the walk with their pool indices; fewer, or none,
    /// once the pool is exhausted (every prompt retired, or the epochs done).
    pub fn next_problems(&mut self, source: &dyn ProblemSource, n: usize) -> Vec<(u64, Problem)> {
        self.pool
            .next_batch(n)
            .into_iter()
            .map(|i| (i, source.problem(Split::Train, i)))
            .collect()
    }

    /// Adds each group's rewards to its prompt's pass rate and retires the prompts that now
    /// meet the rule; `indices[i]` is the pool index of `groups[i]`. Returns how many retired.
    pub fn record(&mut self, indices: &[u64], groups: &[RolloutGroup]) -> usize {
        let mut retired = 0;
        for (&index, group) in indices.iter().zip(groups) {
            let rewards: Vec<f32> = group.samples.iter().map(|s| s.reward).collect();
            if self.pass_rates.record(&group.problem_id, &rewards) && self.pool.retire(index) {
                retired += 1;
            }
        }
        retired
    }

    /// Nothing more will be sampled.
    pub fn exhausted(&self) -> bool {
        self.pool.exhausted()
    }

    /// The pool's figures now.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            pool_active: self.pool.active(),
            pool_retired: self.pool.retired(),
            epoch: self.pool.epoch(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollout::Sample;

    fn group(problem_id: &str, rewards: &[f32]) -> RolloutGroup {
        RolloutGroup {
            group_id: format!("{problem_id}/g"),
            problem_id: problem_id.into(),
            prompt_tokens: vec![1],
            samples: rewards
                .iter()
                .map(|&reward| Sample {
                    tokens: vec![2],
                    logprobs: vec![-0.1],
                    versions: vec![0],
                    reward,
                    truncated: false,
                    mask: Vec::new(),
                    turns: 1,
                    text: String::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn walks_epochs_retires_learned_prompts_and_ends() {
        let cfg = RunConfig {
            task: "addition:2".into(),
            train_size: 3,
            epochs: 2,
            ..RunConfig::default()
        };
        let source = cfg.problem_source(&tasks::VerifierRegistry::new()).unwrap();
        let mut c = SyncCurriculum::new(&cfg, source.as_ref()).unwrap();
        let first = c.next_problems(source.as_ref(), 2);
        assert_eq!(first.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 1]);
        // Prompt 0 passes every sample (32 >= retire_min_samples 16): retired for good.
        let groups = [
            group(&first[0].1.id, &[1.0; 32]),
            group(&first[1].1.id, &[0.0; 32]),
        ];
        assert_eq!(c.record(&[0, 1], &groups), 1);
        let rest = c.next_problems(source.as_ref(), 10);
        // 2 ends the first epoch, then 1 and 2 again; 0 is never sampled again.
        assert_eq!(rest.iter().map(|p| p.0).collect::<Vec<_>>(), [2, 1, 2]);
        assert_eq!(
            rest[1].1.id, first[1].1.id,
            "same prompt, same id, next epoch"
        );
        assert!(c.exhausted());
        assert_eq!(
            c.stats(),
            PoolStats {
                pool_active: 2,
                pool_retired: 1,
                epoch: 2
            }
        );
        let dir = tempfile::tempdir().unwrap();
        c.save(dir.path()).unwrap();
        let back = SyncCurriculum::load_or_new(&cfg, source.as_ref(), dir.path()).unwrap();
        assert_eq!(back.stats(), c.stats());
    }
}
