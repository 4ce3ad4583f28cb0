//! The numeric verifier: finds the final number in a completion and compares it with the
//! reference answer by value.
//!
//! Extraction, in order of priority:
//! 1. the last closed `\boxed{...}`, if any: its answer is the one number inside it (a box
//!    with no number or several, such as `\frac{1}{2}`, has no numeric answer);
//! 2. else the last `####` marker, if any: the first number after it (GSM8K's convention);
//! 3. else the last number anywhere in the text.
//!
//! Numbers are integers or decimals, optionally negative, optionally with thousands
//! separators (`1,234`). A `-` right after a digit, letter or `)` is a minus sign between two
//! numbers, not part of the second one, so `12-5=7` reads as 12, 5, 7.

use std::sync::LazyLock;

use regex::Regex;

use crate::verifier::{reward, Verifier};

/// Relative tolerance when either side is a decimal; integers compare exactly.
const RELATIVE_TOLERANCE: f64 = 1e-6;

static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    // The grouped alternative comes first so `1,234` is one number, not `1` and `234`.
    Regex::new(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?").expect("number pattern is valid")
});

/// Scores by numeric value: see the module documentation for what counts as the answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct NumericVerifier;

impl Verifier for NumericVerifier {
    fn name(&self) -> &str {
        "numeric"
    }

    fn extract(&self, completion: &str) -> Option<String> {
        final_number(completion)
    }

    fn score(&self, completion: &str, answer: &str) -> f32 {
        let (Some(got), Some(want)) = (final_number(completion), final_number(answer)) else {
            return 0.0;
        };
        reward(same_value(&got, &want))
    }
}

/// The answer number of a text, normalised (no separators), per the module's priority order.
fn final_number(text: &str) -> Option<String> {
    if let Some(content) = last_boxed(text) {
        let mut found = numbers(content);
        let first = found.next();
        return if found.next().is_none() { first } else { None };
    }
    if let Some(marker) = text.rfind("####") {
        return numbers(&text[marker + "####".len()..]).next();
    }
    numbers(text).last()
}

/// The numbers in `text`, in order, with thousands separators removed.
fn numbers(text: &str) -> impl Iterator<Item = String> + '_ {
    NUMBER.find_iter(text).map(move |m| {
        let mut number = m.as_str();
        let after_operand = text[..m.start()]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == ')');
        if after_operand {
            number = number.strip_prefix('-').unwrap_or(number);
        }
        number.replace(',', "")
    })
}

/// The content of the last `\boxed{...}` whose braces close.
fn last_boxed(text: &str) -> Option<&str> {
    const OPEN: &str = "\\boxed{";
    text.match_indices(OPEN)
        .filter_map(|(at, _)| {
            let start = at + OPEN.len();
            let mut depth = 1_usize;
            for (offset, byte) in text[start..].bytes().enumerate() {
                match byte {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(&text[start..start + offset]);
                        }
                    }
                    _ => {}
                }
            }
            None
        })
        .last()
}

/// Whether two normalised numbers are equal: exactly for integers (an f64 would round
/// `12345679` and `12345678` together), within the relative tolerance otherwise.
fn same_value(a: &str, b: &str) -> bool {
    if !a.contains('.') && !b.contains('.') {
        return canonical_integer(a) == canonical_integer(b);
    }
    let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) else {
        return false;
    };
    x == y || (x - y).abs() <= RELATIVE_TOLERANCE * x.abs().max(y.abs())
}

/// An integer's digits without leading zeros, with `-` only when non-zero.
fn canonical_integer(number: &str) -> String {
    let (negative, digits) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number),
    };
    let digits = digits.trim_start_matches('0');
    match (digits.is_empty(), negative) {
        (true, _) => "0".to_string(),
        (false, true) => format!("-{digits}"),
        (false, false) => digits.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extract(text: &str) -> Option<String> {
        NumericVerifier.extract(text)
    }

    fn score(completion: &str, answer: &str) -> f32 {
        NumericVerifier.score(completion, answer)
    }

    #[test]
    fn boxed_wins_over_everything_else() {
        assert_eq!(
            extract("so 3 \\boxed{41} then \\boxed{42} #### 7 and 9"),
            Some("42".into())
        );
        assert_eq!(
            extract("\\boxed{x = 5 \\text{ apples}} 8"),
            Some("5".into())
        );
        assert_eq!(score("The answer is \\boxed{579}.", "579"), 1.0);
    }

    #[test]
    fn boxed_without_a_single_number_has_no_answer() {
        assert_eq!(extract("\\boxed{\\frac{1}{2}} 2"), None);
        assert_eq!(extract("\\boxed{none} 4"), None);
        // A box cut off by the length budget does not count as a box.
        assert_eq!(extract("\\boxed{3} then \\boxed{57"), Some("3".into()));
    }

    #[test]
    fn hashes_marker_takes_the_number_after_the_last_one() {
        assert_eq!(
            extract("#### 3\nso 4+4=8\n#### 72 apples, 9"),
            Some("72".into())
        );
        assert_eq!(score("work 1 2 3\n#### 1,234", "1234"), 1.0);
        assert_eq!(extract("#### none"), None);
    }

    #[test]
    fn otherwise_the_last_number() {
        assert_eq!(extract("12+7=19, I think. Yes 19."), Some("19".into()));
        assert_eq!(score("579", "579"), 1.0);
        assert_eq!(score("578", "579"), 0.0);
        assert_eq!(score("5790", "579"), 0.0);
    }

    #[test]
    fn negatives_and_minus_signs() {
        assert_eq!(extract("it is -17"), Some("-17".into()));
        assert_eq!(extract("(-3)"), Some("-3".into()));
        assert_eq!(extract("12-5"), Some("5".into()));
        assert_eq!(score("-17", "-17"), 1.0);
        assert_eq!(score("17", "-17"), 0.0);
        assert_eq!(score("-0", "0"), 1.0);
    }

    #[test]
    fn decimals_compare_with_relative_tolerance() {
        assert_eq!(extract("pi is 3.14159."), Some("3.14159".into()));
        assert_eq!(score("2.5", "2.50"), 1.0);
        assert_eq!(score("5.0", "5"), 1.0);
        assert_eq!(score("1000000.0005", "1000000"), 1.0);
        assert_eq!(score("2.51", "2.5"), 0.0);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(extract("we have 1,234,567 left"), Some("1234567".into()));
        assert_eq!(extract("lists 1,2,3"), Some("3".into()));
        assert_eq!(score("1,234", "1234"), 1.0);
    }

    #[test]
    fn integers_compare_exactly_even_when_large() {
        assert_eq!(score("12345679", "12345678"), 0.0);
        assert_eq!(score("123456789012345678901", "123456789012345678901"), 1.0);
        assert_eq!(score("007", "7"), 1.0);
    }

    #[test]
    fn no_number_scores_zero() {
        assert_eq!(extract("no idea"), None);
        assert_eq!(score("no idea", "4"), 0.0);
        assert_eq!(score("", "4"), 0.0);
        assert_eq!(score("4", "four"), 0.0);
    }
}
