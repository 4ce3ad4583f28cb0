//! Addition and multiplication of two random operands.
//!
//! Prompt `123+456=` or `12*34=`; answer and solution are the result, e.g. `579`. The
//! difficulty is the number of digits per operand: operands are uniform in
//! `10^(d-1)..=10^d - 1`, or `0..=9` for one digit. Scored by the numeric verifier.

use std::ops::RangeInclusive;

use crate::procedural::{Draw, Generator};
use crate::rng::ProblemRng;

/// Which operation a task asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Add,
    Multiply,
}

impl Operation {
    /// Supported digits per operand: results must fit in the `u64` answer.
    pub(crate) fn digits(self) -> RangeInclusive<u32> {
        match self {
            Operation::Add => 1..=18,
            Operation::Multiply => 1..=9,
        }
    }

    fn symbol(self) -> char {
        match self {
            Operation::Add => '+',
            Operation::Multiply => '*',
        }
    }
}

/// Two operands of `digits` digits each, combined by `operation`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arithmetic {
    operation: Operation,
    digits: u32,
}

impl Arithmetic {
    /// `digits` must lie in `operation.digits()`; `spec` checks it for users.
    pub(crate) fn new(operation: Operation, digits: u32) -> Self {
        assert!(
            operation.digits().contains(&digits),
            "{digits} digits unsupported"
        );
        Self { operation, digits }
    }
}

impl Generator for Arithmetic {
    fn draw(&self, rng: &mut ProblemRng) -> Draw {
        let lo = if self.digits == 1 {
            0
        } else {
            10_u64.pow(self.digits - 1)
        };
        let hi = 10_u64.pow(self.digits) - 1;
        let a = rng.in_range(lo, hi);
        let b = rng.in_range(lo, hi);
        let result = match self.operation {
            Operation::Add => a + b,
            Operation::Multiply => a * b,
        };
        Draw {
            prompt: format!("{a}{}{b}=", self.operation.symbol()),
            answer: result.to_string(),
            solution: result.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::numeric::NumericVerifier;
    use crate::problem::{ProblemSource, Split};
    use crate::procedural::{testing::check_source, Procedural};

    fn source(operation: Operation, digits: u32, seed: u64) -> Box<dyn ProblemSource> {
        Box::new(Procedural::new(
            format!("test-{digits}"),
            seed,
            Arithmetic::new(operation, digits),
            Arc::new(NumericVerifier),
        ))
    }

    #[test]
    fn prompts_are_well_formed_and_answers_right() {
        let addition = source(Operation::Add, 3, 1);
        for index in 0..200 {
            let p = addition.problem(Split::Train, index);
            let (a, b) = p.prompt.strip_suffix('=').unwrap().split_once('+').unwrap();
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            assert!(
                (100..=999).contains(&a) && (100..=999).contains(&b),
                "{}",
                p.prompt
            );
            assert_eq!(p.answer, (a + b).to_string());
            assert_eq!(p.solution, p.answer);
        }
        let product = source(Operation::Multiply, 2, 1).problem(Split::Eval, 3);
        let (a, b) = product
            .prompt
            .strip_suffix('=')
            .unwrap()
            .split_once('*')
            .unwrap();
        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
        assert_eq!(product.answer, (a * b).to_string());
    }

    #[test]
    fn largest_difficulties_do_not_overflow() {
        source(Operation::Add, 18, 0).problem(Split::Train, 0);
        source(Operation::Multiply, 9, 0).problem(Split::Train, 0);
    }

    #[test]
    fn sources_are_deterministic_and_splits_disjoint() {
        for digits in [1, 2, 4] {
            check_source(|seed| source(Operation::Add, digits, seed), 2000);
            check_source(|seed| source(Operation::Multiply, digits, seed), 2000);
        }
    }
}
