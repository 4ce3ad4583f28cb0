//! Multi-turn episodes: the model acts, an environment answers, the model acts again, and the
//! reward comes from the environment. A one-turn task is the episode of one step (the
//! `single` environment), so every rollout runs through this one engine.
//!
//! All the episodes of a batch (G per problem) decode in one batched decoder
//! ([`policy::decode_dynamic`]). A row leaves the batch when its turn ends (a stop token, the
//! turn's token budget `sampling.max_new_tokens`, or the episode's `max_tokens`); the
//! environment answers the turn; unless the episode is over, the row joins again with its
//! whole context, the observation appended as environment tokens. In-process environments
//! answer at once, in order (a seeded run is reproducible); remote ones answer on worker
//! threads while the other rows keep decoding. Weights still swap in flight between decode
//! steps through the caller's [`StepHook`], and each model token records the version that
//! produced it.
//!
//! A sample's tokens are everything after the prompt; its mask marks the environment's
//! tokens, which carry no log-prob, version or gradient. The group's prompt is what the
//! episodes' first observations share (all of it for every environment whose first
//! observation is the problem's prompt). An episode whose environment fails (after the
//! remote client's own retries) drops its whole group, returned in
//! [`EpisodeOutcome::dropped`] with the reason: never a silent zero reward.

pub mod chat;
mod driver;
mod workers;

use crate::config::EpisodeConfig;
use crate::group::{GroupBatch, RolloutGroup, Sample};
use chat::ChatFormat;
use driver::{Driver, Episode};
use policy::{SamplingParams, StepHook, Tokenizer};
use std::sync::Arc;
use tasks::{EnvError, EnvFactory, Verifier};

/// The caps of one episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpisodeLimits {
    /// Model turns; an episode still going at the cap ends with the reward it has.
    pub max_turns: u32,
    /// Tokens after the prompt, model and environment together; the episode ends there,
    /// truncated (`usize::MAX`: no cap but the turns').
    pub max_tokens: usize,
}

impl From<&EpisodeConfig> for EpisodeLimits {
    fn from(c: &EpisodeConfig) -> Self {
        EpisodeLimits {
            max_turns: c.max_turns,
            max_tokens: match c.max_tokens {
                0 => usize::MAX,
                n => n,
            },
        }
    }
}

/// The environments episodes run against, their caps, and how the model is shown them.
#[derive(Clone)]
pub struct Episodes {
    pub envs: Arc<dyn EnvFactory>,
    pub limits: EpisodeLimits,
    /// The chat template conversations are rendered with; `None`: plain text.
    pub chat: Option<Arc<ChatFormat>>,
}

impl Episodes {
    /// One-turn episodes scored by `verifier`: what every task was before episodes.
    pub fn single(verifier: Arc<dyn Verifier>) -> Episodes {
        Episodes {
            envs: tasks::env::builtin("single", verifier).expect("a built-in"),
            limits: EpisodeLimits {
                max_turns: 1,
                max_tokens: usize::MAX,
            },
            chat: None,
        }
    }

    /// The built-in environment `cfg.env` with `cfg`'s caps (`verifier` is the task's). A
    /// remote one (`cfg.url`) is the caller's to connect: this crate does no network I/O.
    pub fn builtin(cfg: &EpisodeConfig, verifier: Arc<dyn Verifier>) -> Result<Episodes, EnvError> {
        Ok(Episodes {
            envs: tasks::env::builtin(&cfg.env, verifier)?,
            limits: cfg.into(),
            chat: None,
        })
    }

    /// These episodes laid out as `cfg` asks with this model's tokenizer (its chat template
    /// under `chat_template = "auto"`): see [`ChatFormat::resolve`].
    pub fn with_chat(mut self, cfg: &EpisodeConfig, tok: &Tokenizer) -> policy::Result<Self> {
        self.chat = ChatFormat::for_episodes(cfg, tok)?;
        Ok(self)
    }
}

impl std::fmt::Debug for Episodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Episodes")
            .field("env", &self.envs.name())
            .field("limits", &self.limits)
            .field(
                "chat_template",
                &self.chat.as_ref().map(|c| c.template().path()),
            )
            .finish()
    }
}

/// A group that was not produced because an environment failed.
#[derive(Debug, Clone, PartialEq)]
pub struct DroppedGroup {
    pub group_id: String,
    pub problem_id: String,
    pub error: EnvError,
}

/// What the environments cost: per call latencies and the turns taken.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpisodeStats {
    /// Episodes run to their end (in groups that were not dropped or were).
    pub episodes: usize,
    /// Model turns over those episodes.
    pub turns: u64,
    /// Seconds each environment call (reset or step) took.
    pub env_latencies: Vec<f64>,
}

/// A batch of episodes, run.
#[derive(Debug, Clone, Default)]
pub struct EpisodeOutcome {
    /// The groups whose episodes all completed, in the batch's order.
    pub groups: Vec<RolloutGroup>,
    /// The groups an environment failure dropped.
    pub dropped: Vec<DroppedGroup>,
    pub stats: EpisodeStats,
}

/// Runs `batch.group_size` episodes of every problem in `episodes` (their environments, caps
/// and chat template), with the weights `hook` hands over before each decode step; `None`
/// when the hook stopped decoding. Turn `k` of episode `i` (problem-major) draws from stream `i` of `params.seed`,
/// as [`policy::sample`] does, so a one-turn episode draws exactly what it would.
pub fn run_episodes(
    hook: &mut impl StepHook,
    tok: &Tokenizer,
    episodes: &Episodes,
    batch: GroupBatch,
    params: &SamplingParams,
) -> policy::Result<Option<EpisodeOutcome>> {
    let Episodes { envs, limits, chat } = episodes;
    if batch.ids.len() != batch.problems.len() {
        return Err(policy::PolicyError::Input(format!(
            "{} group ids for {} problems",
            batch.ids.len(),
            batch.problems.len()
        )));
    }
    let mut running = Vec::with_capacity(batch.problems.len() * batch.group_size);
    for (g, problem) in batch.problems.iter().enumerate() {
        let seed = reset_seed(params.seed, &problem.id);
        for _ in 0..batch.group_size {
            let i = running.len() as u64;
            running.push(Episode::new(
                g,
                problem.clone(),
                seed,
                envs.make(),
                params,
                chat.clone(),
                i,
            ));
        }
    }
    let remote = running.iter().any(Episode::is_remote);
    std::thread::scope(|scope| {
        let pool = remote.then(|| workers::Workers::spawn(scope, running.len()));
        let mut driver = Driver::new(tok, params, *limits, running, batch.problems.len(), pool);
        if !policy::decode_dynamic(tok.pad_id(), hook, &mut driver)? {
            driver.abandon();
            return Ok(None);
        }
        let (episodes, failures, stats) = driver.finish();
        assemble(batch, episodes, failures, stats, tok).map(Some)
    })
}

/// The seed every episode of a problem resets its environment with.
fn reset_seed(seed: u64, problem_id: &str) -> u64 {
    let h = problem_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    policy::sampling::stream_seed(seed, h, 0x5EED_E915_0DE5)
}

/// The batch's groups from its finished episodes, and those dropped.
fn assemble(
    batch: GroupBatch,
    episodes: Vec<Episode>,
    failures: Vec<Option<EnvError>>,
    stats: EpisodeStats,
    tok: &Tokenizer,
) -> policy::Result<EpisodeOutcome> {
    let mut out = EpisodeOutcome {
        stats,
        ..Default::default()
    };
    let mut it = episodes.into_iter();
    for ((problem, id), failure) in batch.problems.iter().zip(batch.ids).zip(failures) {
        let members: Vec<Episode> = it.by_ref().take(batch.group_size).collect();
        let prompt = match failure {
            Some(error) => Err(error),
            None => shared_prompt(&members),
        };
        let prompt = match prompt {
            Ok(p) => p,
            Err(error) => {
                out.dropped.push(DroppedGroup {
                    group_id: id.clone(),
                    problem_id: problem.id.clone(),
                    error,
                });
                continue;
            }
        };
        let samples = members
            .into_iter()
            .map(|e| e.into_sample(prompt.len(), tok))
            .collect::<policy::Result<Vec<Sample>>>()?;
        out.groups.push(RolloutGroup {
            group_id: id.clone(),
            problem_id: problem.id.clone(),
            prompt_tokens: prompt,
            samples,
        });
    }
    Ok(out)
}

/// The longest prefix the episodes' first observations share: the group's prompt. The rest
/// of each first observation becomes environment tokens of its sample.
fn shared_prompt(members: &[Episode]) -> Result<Vec<u32>, EnvError> {
    let first = members
        .first()
        .map(|e| e.first_observation())
        .unwrap_or(&[]);
    let len = members.iter().fold(first.len(), |len, e| {
        let other = e.first_observation();
        first[..len]
            .iter()
            .zip(other)
            .take_while(|(a, b)| a == b)
            .count()
    });
    if len == 0 {
        return Err(EnvError::Invalid(
            "the episodes' first observations share no prompt token".into(),
        ));
    }
    Ok(first[..len].to_vec())
}

#[cfg(test)]
mod tests;
