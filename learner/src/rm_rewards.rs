//! The synchronous loop's rewards from a served reward model (the run's
//! `reward = { rm = "URL" }`), as the actors take them: every group of a step scored
//! concurrently (the server batches them) with the token and TLS of
//! [`crate::episodes::use_security`], on the client runtime remote environments use. A group
//! the server gives no usable scores (down past its retries, hung, garbage) is dropped and
//! logged, never trained with made-up rewards.

use crate::error::Result;
use futures::future::join_all;
use reward_service::RewardClient;
use rollout::config::RewardConfig;
use rollout::RolloutGroup;

/// The run's reward server and how its scores become rewards.
pub struct RmRewards {
    client: RewardClient,
    cfg: RewardConfig,
}

impl RmRewards {
    /// The run's reward server; None when rewards come from the verifier alone.
    pub fn for_run(cfg: &RewardConfig) -> Result<Option<RmRewards>> {
        let Some(url) = cfg.rm.as_deref() else {
            return Ok(None);
        };
        let handle = crate::episodes::runtime()?.handle().clone();
        let security = crate::episodes::security();
        let client = RewardClient::connect(url, &security, cfg.timeout(), cfg.attempts, handle)?;
        tracing::info!(url, combine = ?cfg.combine, transform = ?cfg.transform, "rewards from a reward server");
        Ok(Some(RmRewards {
            client,
            cfg: cfg.clone(),
        }))
    }

    /// `groups` with their rewards from the reward model, and how many got none (dropped,
    /// each logged). Blocks the calling thread.
    pub fn score(&self, groups: Vec<RolloutGroup>) -> (Vec<RolloutGroup>, usize) {
        let scored = self
            .client
            .block_on(join_all(groups.into_iter().map(|mut g| async move {
                let scores = self.client.score(&rollout::reward::sequences(&g)).await;
                let applied = scores.map_err(|e| e.to_string()).and_then(|s| {
                    rollout::reward::apply_scores(&mut g, &s, &self.cfg).map_err(|e| e.to_string())
                });
                (g, applied)
            })));
        let mut kept = Vec::new();
        let mut dropped = 0;
        for (g, applied) in scored {
            match applied {
                Ok(()) => kept.push(g),
                Err(error) => {
                    dropped += 1;
                    tracing::warn!(group = %g.group_id, problem = %g.problem_id, reason = "reward_model", %error, "dropped a group: the reward model failed");
                }
            }
        }
        (kept, dropped)
    }
}
