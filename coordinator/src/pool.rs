//! The prompt pool: which train problem is leased next.
//!
//! Order: prompts returned by expired leases first (oldest first), then the source's train
//! indices in order. A dataset (finite source) is cycled in epochs; an unbounded procedural
//! source is walked forever. A retired problem is never handed out again, and a problem of a
//! dataset is never in two outstanding leases at once.

use std::collections::{HashSet, VecDeque};

use tasks::{Problem, ProblemSource, Split};

/// A problem handed out by the pool, with the train index it came from.
#[derive(Debug, Clone)]
pub(crate) struct PooledProblem {
    pub index: u64,
    pub problem: Problem,
}

/// The supply of train problems and the bookkeeping of which are leased, returned or retired.
pub(crate) struct PromptPool {
    source: Box<dyn ProblemSource>,
    /// Number of train problems; None for an unbounded source.
    len: Option<u64>,
    /// Next index to hand out fresh: in `0..len` for a dataset, the count handed out so far
    /// for an unbounded source.
    cursor: u64,
    /// Indices given back by expired leases, to be leased again before fresh ones.
    returned: VecDeque<u64>,
    leased: HashSet<u64>,
    retired: HashSet<u64>,
}

impl PromptPool {
    /// A pool over the train split of `source`.
    pub(crate) fn new(source: Box<dyn ProblemSource>) -> Self {
        let len = source.len(Split::Train);
        Self {
            source,
            len,
            cursor: 0,
            returned: VecDeque::new(),
            leased: HashSet::new(),
            retired: HashSet::new(),
        }
    }

    /// Up to `max` problems, marked leased; empty when every problem is retired or leased.
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

    /// Where fresh problems continue from (journaled with each grant).
    pub(crate) fn cursor(&self) -> u64 {
        self.cursor
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
        self.cursor = cursor;
    }

    /// Whether `index` is retired.
    pub(crate) fn is_retired(&self, index: u64) -> bool {
        self.retired.contains(&index)
    }

    /// The pool's bookkeeping in a canonical order, to compare a replayed pool with the live one.
    #[cfg(test)]
    pub(crate) fn describe(&self) -> String {
        let mut leased: Vec<_> = self.leased.iter().collect();
        leased.sort();
        let mut retired: Vec<_> = self.retired.iter().collect();
        retired.sort();
        format!(
            "cursor {} returned {:?} leased {leased:?} retired {retired:?}",
            self.cursor, self.returned
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
            if !self.retired.contains(&index) && !self.returned.contains(&index) {
                self.returned.push_back(index);
            }
        }
    }

    /// Retires `index` for good; true if it was not retired before.
    pub(crate) fn retire(&mut self, index: u64) -> bool {
        self.retired.insert(index)
    }

    /// Problems that may still be leased: a dataset's problems not retired, or for an
    /// unbounded source the distinct problems handed out so far that are not retired.
    pub(crate) fn active(&self) -> u64 {
        let known = self.len.unwrap_or(self.cursor);
        known.saturating_sub(self.retired())
    }

    /// Problems retired.
    pub(crate) fn retired(&self) -> u64 {
        self.retired.len() as u64
    }

    fn next_returned(&mut self) -> Option<u64> {
        while let Some(index) = self.returned.pop_front() {
            // A dataset may have reached it again fresh meanwhile, or it may have been retired
            // by a late completion.
            if !self.leased.contains(&index) && !self.retired.contains(&index) {
                return Some(index);
            }
        }
        None
    }

    fn next_fresh(&mut self) -> Option<u64> {
        let Some(len) = self.len else {
            // Indices of an unbounded source are handed out once each, in order, so a fresh
            // one is never leased or retired.
            let index = self.cursor;
            self.cursor += 1;
            return Some(index);
        };
        for _ in 0..len {
            let index = self.cursor;
            self.cursor = (self.cursor + 1) % len;
            if !self.leased.contains(&index) && !self.retired.contains(&index) {
                return Some(index);
            }
        }
        None
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
        PromptPool::new(Box::new(FixedSource { len }))
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
    fn dataset_cycles_skipping_leased_and_retired() {
        let mut pool = pool(Some(3));
        assert_eq!(indices(&pool.take(2)), [0, 1]);
        pool.release([0]);
        // 2 is fresh, then the cycle wraps to 0; 1 is still leased.
        assert_eq!(indices(&pool.take(5)), [2, 0]);
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
}
