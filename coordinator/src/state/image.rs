//! The state as a journal snapshot keeps it (`snapshot.rs` writes it next to the journal):
//! everything a replay of the records it covers would rebuild, and nothing a replay would not
//! (heartbeat times, actors' versions and figures, the step history start afresh as they do
//! after a replay). Restoring an image and then replaying the records after it gives the
//! state a replay of the whole journal gives.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::replay::Resume;
use super::State;
use crate::curriculum::SavedCurriculum;
use crate::leases::{LeaseBook, LeasedPrompt, SavedLeases};
use crate::pool::SavedPool;
use crate::registry::{Registry, SavedRegistry};

/// The replayable state at one point of the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StateImage {
    pool: SavedPool,
    curriculum: SavedCurriculum,
    leases: SavedLeases,
    registry: SavedRegistry,
    learner_version: u64,
    accept_any_version: bool,
    done: bool,
    prompts_completed: u64,
    reissue: BTreeMap<u64, String>,
    undurable: Vec<LeasedPrompt>,
    straddling: Vec<String>,
    durable_early: Vec<String>,
    /// Absent from snapshots written before early drops were kept.
    #[serde(default)]
    requeue_early: Vec<String>,
    learner_seen: bool,
}

impl State {
    /// The state's image, outstanding deadlines on the wall clock.
    pub(crate) fn image(&self) -> StateImage {
        let clock = self.clock;
        StateImage {
            pool: self.pool.save(),
            curriculum: self.curriculum.save(),
            leases: self.leases.save(|at| clock.ms(at)),
            registry: self.registry.save(),
            learner_version: self.learner_version,
            accept_any_version: self.accept_any_version,
            done: self.done,
            prompts_completed: self.prompts_completed,
            reissue: self.reissue.iter().map(|(&i, g)| (i, g.clone())).collect(),
            undurable: self.undurable.values().cloned().collect(),
            straddling: self.straddling.iter().cloned().collect(),
            durable_early: self.durable_early.iter().cloned().collect(),
            requeue_early: self.requeue_early.iter().cloned().collect(),
            learner_seen: self.learner_seen,
        }
    }

    /// Makes this fresh state the one `image` keeps, at `now`, the image taken when the last
    /// record it covers was written at `last_t` (wall ms); returns where a replay of the
    /// records after it starts. An error says what in the image does not fit this run.
    pub(crate) fn restore(
        &mut self,
        image: StateImage,
        last_t: u64,
        now: Instant,
    ) -> Result<Resume, String> {
        self.pool.restore(image.pool)?;
        self.curriculum.restore(image.curriculum);
        let (leases, deadlines) = LeaseBook::restore(image.leases, now)?;
        self.leases = leases;
        self.registry = Registry::restore_saved(image.registry, now)?;
        self.learner_version = image.learner_version;
        self.accept_any_version = image.accept_any_version;
        self.done = image.done;
        self.prompts_completed = image.prompts_completed;
        self.reissue = image.reissue.into_iter().collect::<HashMap<_, _>>();
        self.undurable = image
            .undurable
            .into_iter()
            .map(|p| (p.group_id.clone(), p))
            .collect();
        self.straddling = image.straddling.into_iter().collect();
        self.durable_early = image.durable_early.into_iter().collect();
        self.requeue_early = image.requeue_early.into_iter().collect();
        self.learner_seen = image.learner_seen;
        Ok(Resume {
            deadlines: deadlines.into_iter().collect(),
            last_t,
        })
    }
}
