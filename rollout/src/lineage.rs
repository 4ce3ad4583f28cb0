//! Lineages: which learner life produced which versions, so that weights (and the tokens
//! sampled with them) from a future that a learner crash abandoned are never used.
//!
//! Each learner life picks a fresh random lineage id. A fresh run's history is one open
//! segment `(id, versions 0..)`. A learner resumed from a checkpoint at version `B` keeps the
//! checkpoint's history with its last segment closed at `B` (those versions are the same
//! weights whoever holds them) and opens `(new id, versions B..)`. A version `v` sampled under
//! lineage `L` is one of the learner's own iff a segment of its history has id `L` and holds
//! `v`: versions past `B` of the life that died are not, however they compare to the new
//! life's. Lineage 0 means "not stated" (a group from an older actor): it is taken for any
//! version the learner has reached, as before lineages existed.

use serde::{Deserialize, Serialize};

/// A run of versions `first..=last` (`last` None: still growing) made by one learner life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub id: u64,
    pub first: u64,
    pub last: Option<u64>,
}

/// The versions the current learner life stands on, oldest segment first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    pub segments: Vec<Segment>,
}

impl Lineage {
    /// A fresh run's history: lineage `id` from version `at` on.
    pub fn fresh(id: u64, at: u64) -> Self {
        Lineage {
            segments: vec![Segment {
                id,
                first: at,
                last: None,
            }],
        }
    }

    /// The history of a life `id` resumed from a checkpoint at version `at` whose history was
    /// `saved` (empty for a checkpoint from before lineages: then only the new life is known).
    pub fn resumed(saved: &Lineage, at: u64, id: u64) -> Self {
        let mut segments: Vec<Segment> = saved
            .segments
            .iter()
            .filter(|s| s.first <= at)
            .cloned()
            .collect();
        if let Some(last) = segments.last_mut() {
            last.last = Some(last.last.map_or(at, |l| l.min(at)));
        }
        segments.push(Segment {
            id,
            first: at,
            last: None,
        });
        Lineage { segments }
    }

    /// The current life's id (0 for an empty history).
    pub fn current(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.id)
    }

    /// Whether version `version` of lineage `id` is one this history stands on.
    pub fn produced(&self, id: u64, version: u64) -> bool {
        self.segments
            .iter()
            .any(|s| s.id == id && s.first <= version && s.last.is_none_or(|l| version <= l))
    }

    /// Whether tokens sampled under lineage `id` with `versions` may train at `current`:
    /// every version one of this history's (lineage 0: not after `current`).
    pub fn accepts(&self, id: u64, mut versions: impl Iterator<Item = u64>, current: u64) -> bool {
        if id == 0 {
            return versions.all(|v| v <= current);
        }
        versions.all(|v| self.produced(id, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_life_stands_on_its_own_versions() {
        let l = Lineage::fresh(7, 0);
        assert_eq!(l.current(), 7);
        assert!(l.produced(7, 0) && l.produced(7, 1_000));
        assert!(!l.produced(8, 3));
    }

    #[test]
    fn a_resumed_life_keeps_the_ancestors_up_to_its_checkpoint_only() {
        // Life 1 reached version 10 and died; its checkpoint was at 6.
        let saved = Lineage::fresh(1, 0);
        let two = Lineage::resumed(&saved, 6, 2);
        assert!(two.produced(1, 6) && two.produced(1, 0), "the same weights");
        assert!(!two.produced(1, 7), "a lost future");
        assert!(two.produced(2, 6) && two.produced(2, 9));
        // Life 2 reached 9 and died; its checkpoint at 8 held the history up to then.
        let three = Lineage::resumed(&two, 8, 3);
        assert!(three.produced(1, 5) && three.produced(2, 8) && three.produced(3, 8));
        assert!(!three.produced(1, 7) && !three.produced(2, 9));
        assert_eq!(three.current(), 3);
        // Resumed from an older checkpoint of life 1 (at 4): life 2 is gone entirely.
        let four = Lineage::resumed(&two, 4, 4);
        assert!(four.produced(1, 4) && !four.produced(1, 5) && !four.produced(2, 6));
    }

    #[test]
    fn groups_are_accepted_only_when_every_version_is_in_the_history() {
        let l = Lineage::resumed(&Lineage::fresh(1, 0), 6, 2);
        assert!(l.accepts(1, [5, 6].into_iter(), 7));
        assert!(!l.accepts(1, [6, 7].into_iter(), 9), "7 of life 1 was lost");
        assert!(l.accepts(2, [6, 9].into_iter(), 9));
        assert!(!l.accepts(9, [1].into_iter(), 9), "an unknown life");
        // Not stated: the versions the learner has reached.
        assert!(l.accepts(0, [3, 9].into_iter(), 9));
        assert!(!l.accepts(0, [10].into_iter(), 9));
        // A checkpoint from before lineages: only the new life is known.
        let legacy = Lineage::resumed(&Lineage::default(), 6, 5);
        assert!(legacy.produced(5, 6) && !legacy.produced(1, 6));
    }
}
