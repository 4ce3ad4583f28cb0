//! The journal's records: one JSON object per line, each an effect on the coordinator's state
//! (docs/fault-tolerance.md lists them). Replaying them in order rebuilds the state; they
//! carry outcomes (which prompts a lease got, the version the learner now has), not requests,
//! so a replay never depends on the settings or the clock.

use serde::{Deserialize, Serialize};

/// The format written by this version; a journal of another format is refused.
pub(crate) const FORMAT: u32 = 1;

/// One line of the journal: when it was written (wall clock, unix milliseconds) and what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub t: u64,
    #[serde(flatten)]
    pub record: Record,
}

/// A prompt as granted in a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GrantedPrompt {
    /// Train index in the task's source.
    pub index: u64,
    pub problem: String,
    /// The id the actor gives this prompt's group (kept when the prompt is leased again).
    pub group: String,
}

/// The rewards recorded for one problem of a completed lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RecordedResult {
    pub problem: String,
    pub rewards: Vec<f32>,
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Record {
    /// The first line: which run the journal belongs to.
    Header {
        format: u32,
        task: String,
        seed: u64,
        /// The train pool's size (None: unbounded, or a journal from before it was recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        train_size: Option<u64>,
        /// Compactions before this journal was started (`snapshot.rs`): 0 for a journal that
        /// holds the run from its start, g for the tail after the snapshot of generation g.
        #[serde(default, skip_serializing_if = "is_zero")]
        generation: u64,
    },
    /// A member joined under `member`.
    Register {
        member: String,
        /// `actor` or `learner`.
        role: String,
        name: String,
        addr: String,
    },
    /// An actor was declared dead for silence (its leases expire in their own records).
    Dead { member: String },
    /// A lease was granted; the pool's fresh cursor stood at `cursor` afterwards.
    Grant {
        lease: String,
        member: String,
        prompts: Vec<GrantedPrompt>,
        cursor: u64,
        /// Wall-clock deadline, unix milliseconds.
        deadline_ms: u64,
    },
    /// A lease's results were recorded; `accepted` when it was outstanding (and is now
    /// done), false for a late completion of an expired lease (rewards only).
    Complete {
        lease: String,
        accepted: bool,
        results: Vec<RecordedResult>,
    },
    /// A lease expired (deadline or dead holder); its prompts went back to the pool.
    Expire { lease: String },
    /// A problem was retired by the curriculum.
    Retire { index: u64, problem: String },
    /// The learner published: the coordinator's learner version and done flag afterwards,
    /// the problems whose groups had zero variance, and the groups a checkpoint now holds
    /// (their prompts are done for good), and those the learner dropped untrained (their
    /// prompts are leased again).
    Publish {
        version: u64,
        done: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        zero_variance: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        durable: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        requeue: Vec<String>,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_one_flat_json_object_each() {
        let entry = Entry {
            t: 17,
            record: Record::Expire {
                lease: "lease-3".into(),
            },
        };
        let line = serde_json::to_string(&entry).unwrap();
        assert_eq!(line, r#"{"t":17,"kind":"expire","lease":"lease-3"}"#);
        assert_eq!(serde_json::from_str::<Entry>(&line).unwrap(), entry);
        let publish: Entry =
            serde_json::from_str(r#"{"t":1,"kind":"publish","version":4,"done":false}"#).unwrap();
        assert_eq!(
            publish.record,
            Record::Publish {
                version: 4,
                done: false,
                zero_variance: vec![],
                durable: vec![],
                requeue: vec![]
            }
        );
    }
}
