//! Sorting a short list of digits into ascending order.
//!
//! Prompt `sort 5 2 9 1:`; answer and solution `1 2 5 9`. The difficulty is the list length;
//! elements are single digits 0..=9, repeats allowed.

use std::ops::RangeInclusive;
use std::sync::LazyLock;

use regex::Regex;

use crate::procedural::{Draw, Generator};
use crate::rng::ProblemRng;
use crate::verifier::{reward, Verifier};

/// Supported list lengths.
pub(crate) const LENGTHS: RangeInclusive<u32> = 1..=32;

static INTEGER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"-?\d+").expect("integer pattern is valid"));

/// Generates sorting problems over lists of `length` digits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sorting {
    length: u32,
}

impl Sorting {
    /// `length` must lie in `LENGTHS`; `spec` checks it for users.
    pub(crate) fn new(length: u32) -> Self {
        assert!(LENGTHS.contains(&length), "length {length} unsupported");
        Self { length }
    }
}

impl Generator for Sorting {
    fn draw(&self, rng: &mut ProblemRng) -> Draw {
        problem_for((0..self.length).map(|_| rng.in_range(0, 9)).collect())
    }

    /// One-element lists are only ten problems, too few to leave the split to the hash.
    fn enumerate(&self) -> Option<Vec<Draw>> {
        (self.length == 1).then(|| (0..=9).map(|digit| problem_for(vec![digit])).collect())
    }
}

fn problem_for(mut list: Vec<u64>) -> Draw {
    let prompt = format!("sort {}:", join(&list));
    list.sort_unstable();
    Draw {
        prompt,
        answer: join(&list),
        solution: join(&list),
    }
}

fn join<T: ToString>(list: &[T]) -> String {
    list.iter().map(T::to_string).collect::<Vec<_>>().join(" ")
}

/// Right iff the integers on the completion's last non-empty line are the answer's integers
/// in ascending order.
///
/// The answer is sorted before comparing, so it may be given either sorted or as the input
/// list. Any separators work (`1 2 5 9`, `1, 2, 5, 9`, `[1,2,5,9]`); a `-` right after a
/// digit or letter separates rather than negates.
#[derive(Debug, Clone, Copy, Default)]
pub struct SortingVerifier;

impl Verifier for SortingVerifier {
    fn name(&self) -> &str {
        "sorting"
    }

    fn extract(&self, completion: &str) -> Option<String> {
        let last_line = completion.lines().rev().find(|l| !l.trim().is_empty())?;
        let list = integers(last_line)?;
        (!list.is_empty()).then(|| join(&list))
    }

    fn score(&self, completion: &str, answer: &str) -> f32 {
        let got = self.extract(completion).and_then(|list| integers(&list));
        let (Some(got), Some(mut want)) = (got, integers(answer)) else {
            return 0.0;
        };
        want.sort_unstable();
        reward(got == want)
    }
}

/// The integers in `text`, in order; None if one does not fit in `i64`.
fn integers(text: &str) -> Option<Vec<i64>> {
    INTEGER
        .find_iter(text)
        .map(|m| {
            let after_operand = text[..m.start()]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric());
            let digits = m.as_str();
            let digits = if after_operand {
                digits.trim_start_matches('-')
            } else {
                digits
            };
            digits.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::problem::{ProblemSource, Split};
    use crate::procedural::{testing::check_source, Procedural};

    fn score(completion: &str, answer: &str) -> f32 {
        SortingVerifier.score(completion, answer)
    }

    fn source(length: u32, seed: u64) -> Box<dyn ProblemSource> {
        Box::new(Procedural::new(
            format!("sorting-{length}"),
            seed,
            Sorting::new(length),
            Arc::new(SortingVerifier),
        ))
    }

    #[test]
    fn accepts_the_sorted_list_in_any_layout() {
        assert_eq!(score("1 2 5 9", "1 2 5 9"), 1.0);
        assert_eq!(score("[1, 2, 5, 9]", "1 2 5 9"), 1.0);
        assert_eq!(score("thinking 9 5\n1 2 5 9\n", "1 2 5 9"), 1.0);
        assert_eq!(score("1 2 5 9", "5 2 9 1"), 1.0, "answer given unsorted");
        assert_eq!(score("-3 0 12", "12 -3 0"), 1.0);
    }

    #[test]
    fn rejects_wrong_order_missing_or_extra_elements() {
        assert_eq!(score("2 1 5 9", "1 2 5 9"), 0.0);
        assert_eq!(score("1 2 5", "1 2 5 9"), 0.0, "a cut completion is wrong");
        assert_eq!(score("1 2 5 9 9", "1 2 5 9"), 0.0);
        assert_eq!(
            score("1 2 5 9\nno", "1 2 5 9"),
            0.0,
            "the last line holds the answer"
        );
        assert_eq!(score("", "1 2 5 9"), 0.0);
        assert_eq!(score("12 59", "1 2 5 9"), 0.0);
    }

    #[test]
    fn extracts_normalised_list() {
        assert_eq!(SortingVerifier.extract("[3,1-2]"), Some("3 1 2".into()));
        assert_eq!(SortingVerifier.extract("none"), None);
        assert_eq!(SortingVerifier.extract("99999999999999999999"), None);
    }

    #[test]
    fn prompts_list_the_digits_and_answers_sort_them() {
        let src = source(4, 11);
        for index in 0..200 {
            let p = src.problem(Split::Eval, index);
            let listed = p
                .prompt
                .strip_prefix("sort ")
                .unwrap()
                .strip_suffix(':')
                .unwrap();
            let mut digits: Vec<u32> = listed.split(' ').map(|d| d.parse().unwrap()).collect();
            assert_eq!(digits.len(), 4);
            assert!(digits.iter().all(|&d| d <= 9));
            digits.sort_unstable();
            assert_eq!(p.answer, join(&digits));
        }
    }

    #[test]
    fn sources_are_deterministic_and_splits_disjoint() {
        for length in 1..=4 {
            check_source(|seed| source(length, seed), 2000);
        }
    }
}
