//! The problem source shared by the procedural tasks: draws a problem from a per-(seed,
//! split, index) stream and redraws until the prompt falls in the requested split.
//!
//! A prompt is eval iff its hash is 0 mod 10 (`rng::split_of`). Every task's answer is a
//! function of its prompt, so train and eval never share a problem, whatever the seeds.
//! A few degenerate spaces (one-element sorting, one-number countdown) hold about ten prompts,
//! too few to trust the hash to put one in each split; their generators list the whole space,
//! and if a split would be empty the prompt with the smallest hash moves into it.

use std::sync::Arc;

use crate::problem::{Problem, ProblemSource, Split};
use crate::rng::{prompt_hash, split_of, ProblemRng};
use crate::verifier::Verifier;

/// Redraws allowed before giving up. A split holds about a tenth of every problem space that
/// is not enumerated (checked by each task's tests), so this is never reached.
const MAX_DRAWS: usize = 10_000;

/// One drawn problem, before it is given an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Draw {
    pub(crate) prompt: String,
    pub(crate) answer: String,
    pub(crate) solution: String,
}

/// A task's recipe for a random problem.
pub(crate) trait Generator: Send + Sync {
    /// A problem drawn from `rng`; deterministic given the stream.
    fn draw(&self, rng: &mut ProblemRng) -> Draw;

    /// Every problem, in a fixed order, when the space is so small that the hash might leave
    /// a split empty; None otherwise.
    fn enumerate(&self) -> Option<Vec<Draw>> {
        None
    }
}

/// A procedural task: a generator, a seed, and the verifier for its answers.
pub(crate) struct Procedural<G> {
    name: String,
    seed: u64,
    generator: G,
    verifier: Arc<dyn Verifier>,
    /// The train and eval problems in full, for spaces the generator enumerates.
    listed: Option<[Vec<Draw>; 2]>,
}

impl<G: Generator> Procedural<G> {
    pub(crate) fn new(name: String, seed: u64, generator: G, verifier: Arc<dyn Verifier>) -> Self {
        let listed = generator.enumerate().map(partition);
        Self {
            name,
            seed,
            generator,
            verifier,
            listed,
        }
    }

    fn draw_in(&self, split: Split, rng: &mut ProblemRng) -> Draw {
        if let Some(listed) = &self.listed {
            let list = &listed[slot(split)];
            return list[rng.below(list.len() as u64) as usize].clone();
        }
        for _ in 0..MAX_DRAWS {
            let draw = self.generator.draw(rng);
            if split_of(&draw.prompt) == split {
                return draw;
            }
        }
        panic!(
            "task {} drew {MAX_DRAWS} problems without one in the {split} split: \
             its generator should enumerate its small problem space",
            self.name
        );
    }
}

fn slot(split: Split) -> usize {
    match split {
        Split::Train => 0,
        Split::Eval => 1,
    }
}

/// Splits an enumerated space by hash, then makes sure neither split is empty.
fn partition(all: Vec<Draw>) -> [Vec<Draw>; 2] {
    assert!(
        all.len() >= 2,
        "a space of {} problems cannot be split",
        all.len()
    );
    let mut listed = [Vec::new(), Vec::new()];
    for draw in all {
        listed[slot(split_of(&draw.prompt))].push(draw);
    }
    for (empty, full) in [(0, 1), (1, 0)] {
        if listed[empty].is_empty() {
            let (at, _) = listed[full]
                .iter()
                .enumerate()
                .min_by_key(|(_, draw)| prompt_hash(&draw.prompt))
                .expect("the other split holds the whole space");
            let moved = listed[full].remove(at);
            listed[empty].push(moved);
        }
    }
    listed
}

impl<G: Generator> ProblemSource for Procedural<G> {
    fn name(&self) -> &str {
        &self.name
    }

    fn problem(&self, split: Split, index: u64) -> Problem {
        let mut rng = ProblemRng::for_problem(self.seed, split, index);
        let draw = self.draw_in(split, &mut rng);
        Problem {
            id: format!("{}/{split}/{index}", self.name),
            prompt: draw.prompt,
            answer: draw.answer,
            solution: draw.solution,
        }
    }

    fn len(&self, _split: Split) -> Option<u64> {
        None
    }

    fn verifier(&self) -> Arc<dyn Verifier> {
        Arc::clone(&self.verifier)
    }
}

/// Shared checks for every procedural task's tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::HashSet;

    use super::*;

    /// Asserts determinism, seed sensitivity, disjoint splits and self-consistency on `count`
    /// problems per split of `make(seed)`.
    pub(crate) fn check_source(make: impl Fn(u64) -> Box<dyn ProblemSource>, count: u64) {
        let source = make(7);
        let again = make(7);
        let other = make(8);
        let verifier = source.verifier();
        let mut prompts = [HashSet::new(), HashSet::new()];
        let mut differs = false;
        for split in [Split::Train, Split::Eval] {
            for index in 0..count {
                let problem = source.problem(split, index);
                assert_eq!(
                    problem,
                    again.problem(split, index),
                    "same seed, same problem"
                );
                differs |= problem.prompt != other.problem(split, index).prompt;
                assert_eq!(problem.id, format!("{}/{split}/{index}", source.name()));
                let printable = |b: u8| b == b'\n' || (b' '..=b'~').contains(&b);
                assert!(problem.prompt.bytes().all(printable), "{}", problem.prompt);
                assert!(
                    problem.solution.bytes().all(printable),
                    "{}",
                    problem.solution
                );
                assert_eq!(verifier.score(&problem.solution, &problem.answer), 1.0);
                prompts[slot(split)].insert(problem.prompt);
            }
        }
        assert!(differs, "different seeds should give different problems");
        let [train, eval] = prompts;
        assert!(train.is_disjoint(&eval), "a prompt appeared in both splits");
        assert_eq!(source.len(Split::Train), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prompts `0..size`, enumerated or drawn.
    struct Counter {
        size: u64,
        listed: bool,
    }

    impl Generator for Counter {
        fn draw(&self, rng: &mut ProblemRng) -> Draw {
            let n = rng.below(self.size).to_string();
            Draw {
                prompt: n.clone(),
                answer: n.clone(),
                solution: n,
            }
        }
        fn enumerate(&self) -> Option<Vec<Draw>> {
            self.listed.then(|| {
                (0..self.size)
                    .map(|n| Draw {
                        prompt: n.to_string(),
                        answer: n.to_string(),
                        solution: n.to_string(),
                    })
                    .collect()
            })
        }
    }

    fn source(size: u64, listed: bool) -> Procedural<Counter> {
        let verifier = Arc::new(crate::verifier::ExactVerifier);
        Procedural::new("count".into(), 3, Counter { size, listed }, verifier)
    }

    #[test]
    fn drawn_problems_follow_the_hash() {
        let counter = source(1000, false);
        for split in [Split::Train, Split::Eval] {
            for index in 0..500 {
                assert_eq!(split_of(&counter.problem(split, index).prompt), split);
            }
        }
    }

    #[test]
    fn enumerated_spaces_fill_both_splits() {
        // Two prompts can hash into the same split; partition must still give each one.
        for size in 2..40 {
            let counter = source(size, true);
            let train = counter.problem(Split::Train, 0).prompt;
            let eval = counter.problem(Split::Eval, 0).prompt;
            assert_ne!(train, eval);
            let [train_list, eval_list] = counter.listed.as_ref().unwrap();
            assert_eq!(train_list.len() + eval_list.len(), size as usize);
        }
    }

    #[test]
    fn enumerated_spaces_keep_the_hash_rule_when_it_works() {
        let counter = source(200, true);
        let [train, eval] = counter.listed.as_ref().unwrap();
        assert!(train.iter().all(|d| split_of(&d.prompt) == Split::Train));
        assert!(eval.iter().all(|d| split_of(&d.prompt) == Split::Eval));
    }
}
