//! Countdown: reach a target by combining given numbers with `+ - * /`.
//!
//! Prompt `3 5 8>23:` (the numbers, `>`, the target, `:`); solution an expression such as
//! `3*5+8`. The difficulty is how many numbers (1..=9 each) are given. Problems are built by
//! combining the numbers at random into one expression (division only when exact, subtraction
//! only when positive), so a solution using every number exactly once always exists.
//!
//! The verifier needs the numbers as well as the target, so `answer` holds both:
//! `23|3 5 8` (target, `|`, the numbers separated by spaces).

use std::ops::RangeInclusive;

use crate::expr::evaluate;
use crate::procedural::{Draw, Generator};
use crate::rng::ProblemRng;
use crate::verifier::{reward, Verifier};

/// Supported counts of numbers: with eight, even all-9 products (43 million) fit easily.
pub(crate) const COUNTS: RangeInclusive<u32> = 1..=8;

/// The values the given numbers are drawn from.
const NUMBERS: RangeInclusive<u64> = 1..=9;

/// Binding strength of a rendered sub-expression, to parenthesise only where needed.
const SUM: u8 = 1;
const PRODUCT: u8 = 2;
const ATOM: u8 = 3;

/// Generates countdown problems over `count` numbers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Countdown {
    count: u32,
}

impl Countdown {
    /// `count` must lie in `COUNTS`; `spec` checks it for users.
    pub(crate) fn new(count: u32) -> Self {
        assert!(COUNTS.contains(&count), "{count} numbers unsupported");
        Self { count }
    }
}

/// A sub-expression: its value and how it is written.
struct Node {
    value: i64,
    text: String,
    precedence: u8,
}

impl Generator for Countdown {
    fn draw(&self, rng: &mut ProblemRng) -> Draw {
        let numbers: Vec<i64> = (0..self.count)
            .map(|_| rng.in_range(*NUMBERS.start(), *NUMBERS.end()) as i64)
            .collect();
        let mut nodes: Vec<Node> = numbers.iter().map(|&n| atom(n)).collect();
        // Joining random pairs (not left to right) gives every expression tree shape a chance.
        while nodes.len() > 1 {
            let a = nodes.swap_remove(rng.below(nodes.len() as u64) as usize);
            let b = nodes.swap_remove(rng.below(nodes.len() as u64) as usize);
            nodes.push(combine(a, b, rng));
        }
        problem_for(&numbers, nodes.pop().expect("at least one number"))
    }

    /// One-number problems are only nine, too few to leave the split to the hash.
    fn enumerate(&self) -> Option<Vec<Draw>> {
        (self.count == 1).then(|| {
            NUMBERS
                .map(|n| problem_for(&[n as i64], atom(n as i64)))
                .collect()
        })
    }
}

fn atom(value: i64) -> Node {
    Node {
        value,
        text: value.to_string(),
        precedence: ATOM,
    }
}

fn problem_for(numbers: &[i64], solution: Node) -> Draw {
    let listed = numbers
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    Draw {
        prompt: format!("{listed}>{}:", solution.value),
        answer: format!("{}|{listed}", solution.value),
        solution: solution.text,
    }
}

/// Joins two nodes with a random operation that keeps every intermediate value a positive
/// integer, so the expression is valid under the verifier's exact arithmetic.
fn combine(a: Node, b: Node, rng: &mut ProblemRng) -> Node {
    let (big, small) = if a.value >= b.value { (a, b) } else { (b, a) };
    let mut ops = vec![b'+', b'*'];
    if big.value != small.value {
        ops.push(b'-');
    }
    if small.value > 1 && big.value % small.value == 0 {
        ops.push(b'/');
    }
    let op = ops[rng.below(ops.len() as u64) as usize];
    let (left, right) = if rng.below(2) == 0 && matches!(op, b'+' | b'*') {
        (small, big)
    } else {
        (big, small)
    };
    let (value, precedence) = match op {
        b'+' => (left.value + right.value, SUM),
        b'-' => (left.value - right.value, SUM),
        b'*' => (left.value * right.value, PRODUCT),
        _ => (left.value / right.value, PRODUCT),
    };
    // The right operand of `-` or `/` needs brackets at equal strength: a-(b-c) != a-b-c.
    let left_text = bracket(left, precedence);
    let right_text = bracket(right, precedence + u8::from(matches!(op, b'-' | b'/')));
    Node {
        value,
        text: format!("{left_text}{}{right_text}", char::from(op)),
        precedence,
    }
}

/// The node's text, in parentheses if it binds more loosely than `needed`.
fn bracket(node: Node, needed: u8) -> String {
    if node.precedence < needed {
        format!("({})", node.text)
    } else {
        node.text
    }
}

/// Right iff the completion's expression uses only the given numbers, each at most as often
/// as given, and evaluates exactly to the target.
///
/// The expression is the completion's first line, up to an `=` if there is one, so both
/// `3*5+8` and `3*5+8=23` are read as `3*5+8`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountdownVerifier;

impl Verifier for CountdownVerifier {
    fn name(&self) -> &str {
        "countdown"
    }

    fn extract(&self, completion: &str) -> Option<String> {
        let line = completion.lines().next().unwrap_or("");
        let expression = line.split('=').next().unwrap_or("").trim();
        (!expression.is_empty()).then(|| expression.to_string())
    }

    fn score(&self, completion: &str, answer: &str) -> f32 {
        let (Some(expression), Some((target, numbers))) =
            (self.extract(completion), parse_answer(answer))
        else {
            return 0.0;
        };
        let Ok(evaluated) = evaluate(&expression) else {
            return 0.0;
        };
        reward(evaluated.value == target && uses_only(&evaluated.literals, numbers))
    }
}

/// `23|3 5 8` as the target and the numbers.
fn parse_answer(answer: &str) -> Option<(i64, Vec<i64>)> {
    let (target, numbers) = answer.split_once('|')?;
    let numbers = numbers
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<Vec<i64>, _>>()
        .ok()?;
    Some((target.trim().parse().ok()?, numbers))
}

/// Whether `used` is a sub-multiset of `available`.
fn uses_only(used: &[i64], mut available: Vec<i64>) -> bool {
    used.iter()
        .all(|n| match available.iter().position(|a| a == n) {
            Some(at) => {
                available.swap_remove(at);
                true
            }
            None => false,
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::problem::{ProblemSource, Split};
    use crate::procedural::{testing::check_source, Procedural};

    fn score(completion: &str, answer: &str) -> f32 {
        CountdownVerifier.score(completion, answer)
    }

    fn source(count: u32, seed: u64) -> Box<dyn ProblemSource> {
        Box::new(Procedural::new(
            format!("countdown-{count}"),
            seed,
            Countdown::new(count),
            Arc::new(CountdownVerifier),
        ))
    }

    #[test]
    fn accepts_right_expressions() {
        assert_eq!(score("3*5+8", "23|3 5 8"), 1.0);
        assert_eq!(score(" 8 + 5*3 = 23\nblah", "23|3 5 8"), 1.0);
        assert_eq!(score("(8-5)*3", "9|3 5 8"), 1.0);
        assert_eq!(
            score("8+5", "13|3 5 8"),
            1.0,
            "not every number must be used"
        );
        assert_eq!(
            score("3*3", "9|3 3 5"),
            1.0,
            "a repeated number may be used as often"
        );
    }

    #[test]
    fn respects_precedence() {
        assert_eq!(score("3+5*8", "43|3 5 8"), 1.0);
        assert_eq!(score("3+5*8", "64|3 5 8"), 0.0);
    }

    #[test]
    fn rejects_wrong_values_and_bad_arithmetic() {
        assert_eq!(score("3*5+8", "24|3 5 8"), 0.0);
        assert_eq!(score("8/3*3+5", "13|3 5 8"), 0.0, "8/3 is not exact");
        assert_eq!(score("(8+", "8|3 5 8"), 0.0);
        assert_eq!(score("", "8|3 5 8"), 0.0);
        assert_eq!(score("23", "23|3 5 8"), 0.0, "23 is not a given number");
    }

    #[test]
    fn rejects_reused_and_unknown_numbers() {
        assert_eq!(
            score("8*3-3+2", "23|3 5 8 2"),
            0.0,
            "3 given once, used twice"
        );
        assert_eq!(score("4*5+3", "23|3 5 8"), 0.0, "4 is not given");
        assert_eq!(score("35-8-4", "23|3 5 8 4"), 0.0, "35 is not 3 and 5");
    }

    #[test]
    fn malformed_answers_score_zero() {
        assert_eq!(score("3*5+8", "23"), 0.0);
        assert_eq!(score("3*5+8", "x|3 5 8"), 0.0);
        assert_eq!(score("3*5+8", "23|3 five 8"), 0.0);
    }

    #[test]
    fn extracts_the_expression() {
        assert_eq!(
            CountdownVerifier.extract("3*5+8=23\n"),
            Some("3*5+8".into())
        );
        assert_eq!(CountdownVerifier.extract("=23"), None);
    }

    #[test]
    fn solutions_use_every_number_once_and_hit_the_target() {
        for count in COUNTS {
            let src = source(count, 3);
            for index in 0..300 {
                let p = src.problem(Split::Train, index);
                let (target, mut numbers) = parse_answer(&p.answer).unwrap();
                let listed = numbers.iter().map(i64::to_string).collect::<Vec<_>>();
                assert_eq!(p.prompt, format!("{}>{target}:", listed.join(" ")));
                let evaluated = evaluate(&p.solution).unwrap();
                assert_eq!(evaluated.value, target, "{}", p.solution);
                let mut literals = evaluated.literals;
                literals.sort_unstable();
                numbers.sort_unstable();
                assert_eq!(literals, numbers, "{}", p.solution);
                assert!(target > 0);
            }
        }
    }

    #[test]
    fn sources_are_deterministic_and_splits_disjoint() {
        for count in 1..=4 {
            check_source(|seed| source(count, seed), 2000);
        }
    }
}
