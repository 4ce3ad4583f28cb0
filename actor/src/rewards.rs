//! Rewards from a served reward model (the run's `reward = { rm = "URL" }`): the groups of a
//! lease are scored concurrently (the server batches what arrives together), each group's
//! rewards made from its scores as `rollout::reward` says. A group whose scores cannot be had
//! (the server down past its retries, hung, or answering garbage) is dropped and counted by
//! the caller, never pushed with made-up rewards.

use futures::future::join_all;
use reward_service::{RewardClient, RewardError};
use rollout::config::RewardConfig;
use rollout::RolloutGroup;

/// The run's reward server and how its scores become rewards.
pub struct RmRewards {
    client: RewardClient,
    cfg: RewardConfig,
}

/// A group left out because the reward model gave it no usable scores.
pub struct RmDropped {
    pub group_id: String,
    pub problem_id: String,
    pub error: String,
}

impl RmRewards {
    /// The run's reward server with the actor's token and TLS; None when the run takes its
    /// rewards from the verifier alone. Must be called inside the actor's runtime.
    pub fn for_run(
        cfg: &RewardConfig,
        security: &proto::transport::Security,
    ) -> Result<Option<RmRewards>, RewardError> {
        let Some(url) = cfg.rm.as_deref() else {
            return Ok(None);
        };
        let handle = tokio::runtime::Handle::current();
        let client = RewardClient::connect(url, security, cfg.timeout(), cfg.attempts, handle)?;
        tracing::info!(url, combine = ?cfg.combine, transform = ?cfg.transform, "rewards from a reward server");
        Ok(Some(RmRewards {
            client,
            cfg: cfg.clone(),
        }))
    }

    /// `groups` with their rewards from the reward model, and those that got none.
    pub async fn score(&self, groups: Vec<RolloutGroup>) -> (Vec<RolloutGroup>, Vec<RmDropped>) {
        let scored = join_all(groups.into_iter().map(|mut g| async move {
            let scores = self.client.score(&rollout::reward::sequences(&g)).await;
            let applied = scores.map_err(|e| e.to_string()).and_then(|s| {
                rollout::reward::apply_scores(&mut g, &s, &self.cfg).map_err(|e| e.to_string())
            });
            (g, applied)
        }))
        .await;
        let (mut kept, mut dropped) = (Vec::new(), Vec::new());
        for (g, applied) in scored {
            match applied {
                Ok(()) => kept.push(g),
                Err(error) => dropped.push(RmDropped {
                    group_id: g.group_id,
                    problem_id: g.problem_id,
                    error,
                }),
            }
        }
        (kept, dropped)
    }
}
