//! The prompt pool: which train problem is leased next.
//!
//! Order: prompts returned by expired leases first (oldest first), then the source's train
//! indices in order (`rollout::curriculum::TrainPool`). A finite source (a dataset, or a
//! procedural task cut to `train_size`) is walked in epochs, up to `epochs` of them when
//! that is set; an unbounded procedural source is walked forever. A retired problem is never
//! handed out again, and a problem of a finite pool is never in two outstanding leases at
//! once: the walk waits at a problem still leased from the previous epoch.

use std::collections::{HashSet, VecDeque};

use rollout::curriculum::TrainPool;
use tasks::{Problem, ProblemSource, Split};

/// A problem handed out by the pool, with the train index it came from.
#[derive(Debug, Clone)]
pub(crate) struct PooledProblem {
    pub index: u64,
    pub problem: Problem,
}

/// The pool's bookkeeping as a snapshot keeps it (the source is rebuilt from the run).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct SavedPool {
    walk: TrainPool,
    returned: Vec<u64>,
    leased: Vec<u64>,
}

/// The supply of train problems and the bookkeeping of which are leased, returned or retired.
pub(crate) struct PromptPool {
    source: Box<dyn ProblemSource>,
    /// The walk over fresh indices, and the retired ones.
    walk: TrainPool,
    /// Indices given back by expired leases, to be leased again before fresh ones.
    returned: VecDeque<u64>,
    leased: HashSet<u64>,
}

impl PromptPool {
    /// A pool over the train split of `source`, walked for `epochs` passes (0: no limit).
    pub(crate) fn new(source: Box<dyn ProblemSource>, epochs: u64) -> Self {
        let len = source.len(Split::Train);
        Self {
            source,
            walk: TrainPool::new(len, epochs),
            returned: VecDeque::new(),
            leased: HashSet::new(),
        }
    }

    /// Up to `max` problems, marked leased; empty when every problem is retired or leased,
    /// or the walk is over.
    pub(crate) fn take(&mut self, max: usize) -> Vec<PooledProblem> {
        let mut taken = Vec::with_capacity(max.min(64));
        while taken.len() < max {
            let index = match self.next_returned().or_else(|| self.next_fresh()) {
                Some(index) => index,
                None => break,
            };
            self.leased.insert(index);
            taken.push(PooledProblem {
                index,
                problem: self.source.problem(Split::Train, index),
            });
        }
        taken
    }

    /// Where fresh problems continue from (journaled with each grant): epochs completed times
    /// the pool's size plus the place in this epoch; for an unbounded source, the count
    /// handed out so far.
    pub(crate) fn cursor(&self) -> u64 {
        self.walk.cursor()
    }

    /// Replays a `take` that handed out `indices` (in order) and left the cursor at `cursor`:
    /// an index found in the returned queue came from there, after `take` had skipped the
    /// entries before it; any other came fresh, after `take` had drained the queue.
    pub(crate) fn replay_take(&mut self, indices: &[u64], cursor: u64) {
        for &index in indices {
            match self.returned.iter().position(|&i| i == index) {
                Some(at) => drop(self.returned.drain(..=at)),
                None => self.returned.clear(),
            }
            self.leased.insert(index);
        }
        self.walk.set_cursor(cursor);
    }

    /// The walk, the returned queue and the leased indices, for a snapshot.
    pub(crate) fn save(&self) -> SavedPool {
        let mut leased: Vec<u64> = self.leased.iter().copied().collect();
        leased.sort_unstable();
        SavedPool {
            walk: self.walk.clone(),
            returned: self.returned.iter().copied().collect(),
            leased,
        }
    }

    /// Takes a snapshot's bookkeeping; an error if it was saved over a pool of another size.
    pub(crate) fn restore(&mut self, saved: SavedPool) -> Result<(), String> {
        if saved.walk.len() != self.walk.len() {
            return Err(format!(
                "the snapshot's pool has {:?} problems, this run's {:?}",
                saved.walk.len(),
                self.walk.len()
            ));
        }
        // The epochs in force are this run's, as a replayed journal's are.
        let epochs = self.walk.epochs();
        self.walk = saved.walk;
        self.walk.set_epochs(epochs);
        self.returned = saved.returned.into();
        self.leased = saved.leased.into_iter().collect();
        Ok(())
    }

    /// Whether `index` is in an outstanding lease.
    pub(crate) fn is_leased(&self, index: u64) -> bool {
        self.leased.contains(&index)
    }

    /// Whether `index` is retired.
    pub(crate) fn is_retired(&self, index: u64) -> bool {
        self.walk.is_retired(index)
    }

    /// The pool's bookkeeping in a canonical order, to compare a replayed pool with the live one.
    #[cfg(test)]
    pub(crate) fn describe(&self) -> String {
        let mut leased: Vec<_> = self.leased.iter().collect();
        leased.sort();
        format!(
            "cursor {} returned {:?} leased {leased:?} retired {:?}",
            self.walk.cursor(),
            self.returned,
            self.walk.retired_indices()
        )
    }

    /// Ends the lease of `indices` without returning them (the lease was completed).
    pub(crate) fn release(&mut self, indices: impl IntoIterator<Item = u64>) {
        for index in indices {
            self.leased.remove(&index);
        }
    }

    /// Ends the lease of `indices` and queues them to be leased again first (the lease
    /// expired); retired ones are dropped.
    pub(crate) fn give_back(&mut self, indices: impl IntoIterator<Item = u64>) {
        for index in indices {
            self.leased.remove(&index);
            if !self.walk.is_retired(index) && !self.returned.contains(&index) {
                self.returned.push_back(index);
            }
        }
    }

    /// Queues `indices`, whose leases completed, to be leased again first (a learner lost
    /// their training); retired ones are dropped. An index leased again meanwhile (a later
    /// epoch's lease) is skipped when its turn comes.
    pub(crate) fn requeue(&mut self, indices: impl IntoIterator<Item = u64>) {
        for index in indices {
            if !self.walk.is_retired(index) && !self.returned.contains(&index) {
                self.returned.push_back(index);
            }
        }
    }

    /// On an unbounded source, forgets the retired marks of indices that can never be handed
    /// out again: neither leased nor `live` (the caller's: returned, or delivered and not yet
    /// held by a checkpoint). Retired indices waiting in the returned queue are dropped from
    /// it first (`take` would skip them anyway). A finite pool keeps every mark.
    pub(crate) fn forget_settled(&mut self, live: impl Fn(u64) -> bool) {
        if self.size().is_some() {
            return;
        }
        let walk = &self.walk;
        self.returned.retain(|&index| !walk.is_retired(index));
        let leased = &self.leased;
        self.walk
            .forget_retired(|index| leased.contains(&index) || live(index));
    }

    /// Retired marks kept (the rest are counted in [`retired`](Self::retired) only).
    #[cfg(test)]
    pub(crate) fn retired_marks(&self) -> usize {
        self.walk.retired_indices().len()
    }

    /// Retires `index` for good; true if it was not retired before.
    pub(crate) fn retire(&mut self, index: u64) -> bool {
        self.walk.retire(index)
    }

    /// Problems that may still be leased: a finite pool's problems not retired, or for an
    /// unbounded source the distinct problems handed out so far that are not retired.
    pub(crate) fn active(&self) -> u64 {
        self.walk.active()
    }

    /// Problems retired.
    pub(crate) fn retired(&self) -> u64 {
        self.walk.retired()
    }

    /// Passes over a finite pool completed (0 for an unbounded source).
    pub(crate) fn epoch(&self) -> u64 {
        self.walk.epoch()
    }

    /// The configured passes (0: no limit).
    pub(crate) fn epochs(&self) -> u64 {
        self.walk.epochs()
    }

    /// The train pool's size; None for an unbounded source.
    pub(crate) fn size(&self) -> Option<u64> {
        self.walk.len()
    }

    /// The pool is spent: no fresh problem is left to walk to (every one retired, or the
    /// configured epochs done), none waits to be leased again and none is leased. Nothing can
    /// bring work back, so the run's rollouts are over.
    pub(crate) fn exhausted(&self) -> bool {
        self.walk.exhausted()
            && self.leased.is_empty()
            && self.returned.iter().all(|&i| self.walk.is_retired(i))
    }

    fn next_returned(&mut self) -> Option<u64> {
        while let Some(index) = self.returned.pop_front() {
            // It may have been retired by a late completion meanwhile.
            if !self.leased.contains(&index) && !self.walk.is_retired(index) {
                return Some(index);
            }
        }
        None
    }

    fn next_fresh(&mut self) -> Option<u64> {
        // An index still leased from the previous epoch holds the walk: handing out the one
        // after it instead would skip it for this epoch.
        let leased = &self.leased;
        self.walk.next_unless(|index| leased.contains(&index))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use tasks::{ExactVerifier, Verifier};

    use super::*;

    /// A source of `len` problems (None: unbounded) named `fixed/<index>`.
    pub(crate) struct FixedSource {
        pub len: Option<u64>,
    }

    impl ProblemSource for FixedSource {
        fn name(&self) -> &str {
            "fixed"
        }

        fn problem(&self, _split: Split, index: u64) -> Problem {
            Problem {
                id: format!("fixed/{index}"),
                prompt: format!("{index}+0="),
                answer: index.to_string(),
                solution: index.to_string(),
            }
        }

        fn len(&self, _split: Split) -> Option<u64> {
            self.len
        }

        fn verifier(&self) -> Arc<dyn Verifier> {
            Arc::new(ExactVerifier)
        }
    }

    fn pool(len: Option<u64>) -> PromptPool {
        pool_for(len, 0)
    }

    fn pool_for(len: Option<u64>, epochs: u64) -> PromptPool {
        PromptPool::new(Box::new(FixedSource { len }), epochs)
    }

    fn indices(taken: &[PooledProblem]) -> Vec<u64> {
        taken.iter().map(|p| p.index).collect()
    }

    #[test]
    fn unbounded_source_is_walked_in_order() {
        let mut pool = pool(None);
        assert_eq!(indices(&pool.take(3)), [0, 1, 2]);
        assert_eq!(indices(&pool.take(2)), [3, 4]);
        assert_eq!(pool.active(), 5);
        let taken = pool.take(1);
        assert_eq!(taken[0].problem.id, "fixed/5");
        assert_eq!(taken[0].problem.answer, "5");
    }

    #[test]
    fn returned_prompts_come_first_in_the_order_returned() {
        let mut pool = pool(None);
        pool.take(4);
        pool.give_back([2, 0]);
        assert_eq!(indices(&pool.take(3)), [2, 0, 4]);
    }

    #[test]
    fn retired_prompts_are_not_given_back() {
        let mut pool = pool(None);
        pool.take(2);
        assert!(pool.retire(1));
        assert!(!pool.retire(1), "already retired");
        pool.give_back([0, 1]);
        assert_eq!(indices(&pool.take(2)), [0, 2]);
        assert_eq!((pool.active(), pool.retired()), (2, 1));
    }

    #[test]
    fn dataset_cycles_waiting_for_leased_and_skipping_retired() {
        let mut pool = pool(Some(3));
        assert_eq!(indices(&pool.take(2)), [0, 1]);
        pool.release([0]);
        // 2 is fresh, then the cycle wraps to 0; 1 is still leased: the walk waits there.
        assert_eq!(indices(&pool.take(5)), [2, 0]);
        assert_eq!(pool.epoch(), 1);
        assert!(pool.take(1).is_empty(), "everything leased");
        pool.release([0, 1, 2]);
        pool.retire(1);
        // The cursor stands at 1 (retired): the next epoch goes on with 2, then 0.
        assert_eq!(indices(&pool.take(5)), [2, 0]);
        assert_eq!(pool.active(), 2);
    }

    #[test]
    fn replaying_takes_rebuilds_the_same_pool() {
        for len in [None, Some(5)] {
            let mut live = pool(len);
            let mut replayed = pool(len);
            let mut takes = Vec::new();
            let mut take = |live: &mut PromptPool, n: usize| {
                let got = indices(&live.take(n));
                takes.push((got.clone(), live.cursor()));
                got
            };
            take(&mut live, 3);
            live.give_back([1, 0]);
            live.retire(1);
            // 1 is skipped (retired), 0 comes back, then fresh ones.
            take(&mut live, 2);
            live.release([0]);
            live.give_back([2]);
            take(&mut live, 1);
            take(&mut live, 2);

            let mut replay = takes.into_iter();
            let mut next = |p: &mut PromptPool| {
                let (indices, cursor) = replay.next().unwrap();
                p.replay_take(&indices, cursor);
            };
            next(&mut replayed);
            replayed.give_back([1, 0]);
            replayed.retire(1);
            next(&mut replayed);
            replayed.release([0]);
            replayed.give_back([2]);
            next(&mut replayed);
            next(&mut replayed);
            assert_eq!(replayed.describe(), live.describe(), "len {len:?}");
            assert_eq!(indices(&replayed.take(3)), indices(&live.take(3)));
        }
    }

    #[test]
    fn fully_retired_dataset_is_empty() {
        let mut pool = pool(Some(2));
        pool.retire(0);
        pool.retire(1);
        assert!(pool.take(1).is_empty());
        assert_eq!(pool.active(), 0);
    }

    #[test]
    fn the_pool_is_exhausted_after_its_epochs_once_nothing_is_out() {
        let mut pool = pool_for(Some(3), 1);
        assert_eq!(indices(&pool.take(2)), [0, 1]);
        assert_eq!(indices(&pool.take(5)), [2], "one epoch only");
        assert_eq!(pool.epoch(), 1);
        assert!(!pool.exhausted(), "prompts are still leased");
        pool.release([0, 2]);
        // An expired lease's prompt comes back even after the last epoch.
        pool.give_back([1]);
        assert!(!pool.exhausted(), "1 waits to be leased again");
        assert_eq!(indices(&pool.take(5)), [1]);
        assert!(!pool.exhausted());
        pool.release([1]);
        assert!(pool.exhausted());
        assert!(pool.take(1).is_empty());

        let mut two = pool_for(Some(2), 2);
        assert_eq!(indices(&two.take(2)), [0, 1]);
        two.release([0, 1]);
        assert!(!two.exhausted());
        assert_eq!(indices(&two.take(4)), [0, 1], "the same prompts again");
        two.release([0, 1]);
        assert!(two.exhausted());
        assert_eq!(two.epoch(), 2);
    }

    #[test]
    fn the_pool_is_exhausted_when_every_prompt_is_retired() {
        let mut pool = pool(Some(2));
        assert_eq!(indices(&pool.take(2)), [0, 1]);
        pool.retire(0);
        pool.retire(1);
        assert!(!pool.exhausted(), "still leased");
        pool.give_back([0, 1]);
        assert!(pool.exhausted(), "retired prompts are not given back");
        // A retired prompt of an expired lease is no work either.
        let mut pool = pool_for(Some(1), 0);
        pool.take(1);
        pool.give_back([0]);
        pool.retire(0);
        assert!(pool.exhausted());
        // An unbounded source never runs out.
        let mut stream = pool_for(None, 1);
        stream.take(3);
        stream.release([0, 1, 2]);
        for i in 0..3 {
            stream.retire(i);
        }
        assert!(!stream.exhausted());
    }
}
