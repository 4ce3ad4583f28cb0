//! A finite training pool cut from an unbounded (procedural) source: train indices
//! `0..train_size` of the inner source, so a curriculum can walk the pool in epochs and retire
//! a prompt for good. The problems and their ids are the inner source's at those indices, so a
//! prompt keeps its id across epochs; the eval split is the inner source's, untouched.

use std::sync::Arc;

use crate::problem::{Problem, ProblemSource, Split};
use crate::verifier::Verifier;

/// An unbounded source seen through a train split of `train_size` problems.
pub struct FiniteTrain {
    inner: Box<dyn ProblemSource>,
    train_size: u64,
}

impl FiniteTrain {
    /// The first `train_size` train problems of `inner` (which must have at least 1).
    pub fn new(inner: Box<dyn ProblemSource>, train_size: u64) -> Self {
        Self {
            inner,
            train_size: train_size.max(1),
        }
    }
}

/// `source` with a train split of `train_size` problems when it is unbounded and
/// `train_size > 0`; otherwise (a dataset, or `train_size = 0`: an unbounded stream, every
/// prompt new) `source` as it is.
pub fn finite_train(source: Box<dyn ProblemSource>, train_size: u64) -> Box<dyn ProblemSource> {
    if train_size == 0 || source.len(Split::Train).is_some() {
        return source;
    }
    Box::new(FiniteTrain::new(source, train_size))
}

impl ProblemSource for FiniteTrain {
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// Train indices wrap around the pool (as a dataset's do); eval ones are the inner
    /// source's.
    fn problem(&self, split: Split, index: u64) -> Problem {
        match split {
            Split::Train => self.inner.problem(split, index % self.train_size),
            Split::Eval => self.inner.problem(split, index),
        }
    }

    fn len(&self, split: Split) -> Option<u64> {
        match split {
            Split::Train => Some(self.train_size),
            Split::Eval => self.inner.len(split),
        }
    }

    fn verifier(&self) -> Arc<dyn Verifier> {
        self.inner.verifier()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::builtin;

    #[test]
    fn a_procedural_source_gets_a_train_pool_with_the_same_problems() {
        let pool = finite_train(builtin("addition", Some(2), 7).unwrap(), 8);
        let inner = builtin("addition", Some(2), 7).unwrap();
        assert_eq!(pool.len(Split::Train), Some(8));
        assert_eq!(pool.len(Split::Eval), None);
        assert_eq!(pool.name(), inner.name());
        for index in 0..8 {
            assert_eq!(
                pool.problem(Split::Train, index),
                inner.problem(Split::Train, index)
            );
        }
        // The next epoch sees the same prompts under the same ids.
        assert_eq!(
            pool.problem(Split::Train, 9).id,
            inner.problem(Split::Train, 1).id
        );
        assert_eq!(
            pool.problem(Split::Eval, 123),
            inner.problem(Split::Eval, 123)
        );
    }

    #[test]
    fn zero_means_unbounded_and_finite_sources_stay_as_they_are() {
        let stream = finite_train(builtin("sorting", None, 0).unwrap(), 0);
        assert_eq!(stream.len(Split::Train), None);
        let mut file = tempfile::Builder::new()
            .suffix(".jsonl")
            .tempfile()
            .unwrap();
        std::io::Write::write_all(
            &mut file,
            b"{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n{\"prompt\": \"2+2=\", \"answer\": \"4\"}\n",
        )
        .unwrap();
        let dataset = crate::Dataset::load_split(
            file.path(),
            &crate::DatasetSplit::Hashed { eval_fraction: 0.0 },
            Arc::new(crate::NumericVerifier),
        )
        .unwrap();
        let kept = finite_train(Box::new(dataset), 4096);
        assert_eq!(kept.len(Split::Train), Some(2));
    }
}
