//! Integer arithmetic expressions for the countdown verifier: a small recursive-descent
//! parser that evaluates as it parses and records every number literal it reads.
//!
//! Grammar (spaces allowed between tokens; no unary minus):
//! ```text
//! expr   = term   (('+' | '-') term)*
//! term   = factor (('*' | '/') factor)*
//! factor = integer | '(' expr ')'
//! ```
//! Arithmetic is checked `i64`; every division must be exact, as in the Countdown game, so
//! `7/2*2` is rejected rather than rounded.

/// Deeper nesting than this is refused, so hostile input cannot overflow the stack.
const MAX_DEPTH: usize = 64;

/// A successfully evaluated expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Evaluated {
    /// The expression's value.
    pub(crate) value: i64,
    /// Every integer literal, in the order written.
    pub(crate) literals: Vec<i64>,
}

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ExprError {
    #[error("expected a number or '(' at byte {at}")]
    ExpectedOperand { at: usize },
    #[error("expected ')' at byte {at}")]
    UnclosedParen { at: usize },
    #[error("unexpected '{found}' at byte {at}")]
    Trailing { at: usize, found: char },
    #[error("{dividend} / {divisor} is not exact")]
    InexactDivision { dividend: i64, divisor: i64 },
    #[error("division by zero")]
    DivisionByZero,
    #[error("arithmetic overflow")]
    Overflow,
    #[error("parentheses nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// Parses and evaluates `text` as a whole; anything left over is an error.
pub(crate) fn evaluate(text: &str) -> Result<Evaluated, ExprError> {
    let mut parser = Parser {
        text: text.as_bytes(),
        at: 0,
        depth: 0,
        literals: Vec::new(),
    };
    let value = parser.expr()?;
    parser.skip_spaces();
    if let Some(&byte) = parser.text.get(parser.at) {
        return Err(ExprError::Trailing {
            at: parser.at,
            found: char::from(byte),
        });
    }
    Ok(Evaluated {
        value,
        literals: parser.literals,
    })
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
    depth: usize,
    literals: Vec<i64>,
}

impl Parser<'_> {
    fn expr(&mut self) -> Result<i64, ExprError> {
        let mut value = self.term()?;
        while let Some(op) = self.eat_any(b"+-") {
            let rhs = self.term()?;
            value = match op {
                b'+' => value.checked_add(rhs),
                _ => value.checked_sub(rhs),
            }
            .ok_or(ExprError::Overflow)?;
        }
        Ok(value)
    }

    fn term(&mut self) -> Result<i64, ExprError> {
        let mut value = self.factor()?;
        while let Some(op) = self.eat_any(b"*/") {
            let rhs = self.factor()?;
            value = match op {
                b'*' => value.checked_mul(rhs).ok_or(ExprError::Overflow)?,
                _ => exact_div(value, rhs)?,
            };
        }
        Ok(value)
    }

    fn factor(&mut self) -> Result<i64, ExprError> {
        self.skip_spaces();
        if self.eat_any(b"(").is_some() {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(ExprError::TooDeep);
            }
            let value = self.expr()?;
            if self.eat_any(b")").is_none() {
                return Err(ExprError::UnclosedParen { at: self.at });
            }
            self.depth -= 1;
            return Ok(value);
        }
        let start = self.at;
        while self.text.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        if start == self.at {
            return Err(ExprError::ExpectedOperand { at: start });
        }
        // Only ASCII digits were consumed, so the slice is valid UTF-8 and parses unless huge.
        let digits = std::str::from_utf8(&self.text[start..self.at]).expect("ASCII digits");
        let value = digits.parse::<i64>().map_err(|_| ExprError::Overflow)?;
        self.literals.push(value);
        Ok(value)
    }

    /// Consumes the next non-space byte if it is one of `choices`.
    fn eat_any(&mut self, choices: &[u8]) -> Option<u8> {
        self.skip_spaces();
        let byte = *self.text.get(self.at)?;
        choices.contains(&byte).then(|| {
            self.at += 1;
            byte
        })
    }

    fn skip_spaces(&mut self) {
        while self.text.get(self.at) == Some(&b' ') {
            self.at += 1;
        }
    }
}

fn exact_div(dividend: i64, divisor: i64) -> Result<i64, ExprError> {
    if divisor == 0 {
        return Err(ExprError::DivisionByZero);
    }
    if dividend.checked_rem(divisor).ok_or(ExprError::Overflow)? != 0 {
        return Err(ExprError::InexactDivision { dividend, divisor });
    }
    dividend.checked_div(divisor).ok_or(ExprError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Result<i64, ExprError> {
        evaluate(text).map(|e| e.value)
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(value("3+5*8"), Ok(43));
        assert_eq!(value("3*5+8"), Ok(23));
        assert_eq!(value("10-3-2"), Ok(5));
        assert_eq!(value("24/4/2"), Ok(3));
        assert_eq!(value("2*9/3"), Ok(6));
        assert_eq!(value("7"), Ok(7));
    }

    #[test]
    fn parentheses_override_precedence() {
        assert_eq!(value("(3+5)*8"), Ok(64));
        assert_eq!(value("10-(3-2)"), Ok(9));
        assert_eq!(value(" ( ( 4 ) ) * ( 1 + 2 ) "), Ok(12));
        assert_eq!(value("(3+5"), Err(ExprError::UnclosedParen { at: 4 }));
    }

    #[test]
    fn division_must_be_exact() {
        assert_eq!(value("8/4"), Ok(2));
        assert_eq!(
            value("7/2*2"),
            Err(ExprError::InexactDivision {
                dividend: 7,
                divisor: 2
            })
        );
        assert_eq!(value("5/(3-3)"), Err(ExprError::DivisionByZero));
    }

    #[test]
    fn records_literals_in_order() {
        let e = evaluate("(12-3)*4+3").unwrap();
        assert_eq!(e.literals, vec![12, 3, 4, 3]);
        assert_eq!(e.value, 39);
    }

    #[test]
    fn malformed_input_is_rejected() {
        assert_eq!(value(""), Err(ExprError::ExpectedOperand { at: 0 }));
        assert_eq!(value("-3+5"), Err(ExprError::ExpectedOperand { at: 0 }));
        assert_eq!(value("3+"), Err(ExprError::ExpectedOperand { at: 2 }));
        assert_eq!(value("3 4"), Err(ExprError::Trailing { at: 2, found: '4' }));
        assert_eq!(value("3=3"), Err(ExprError::Trailing { at: 1, found: '=' }));
        assert_eq!(value("99999999999999999999"), Err(ExprError::Overflow));
        assert_eq!(value("4294967296*4294967296"), Err(ExprError::Overflow));
        assert_eq!(value(&"(".repeat(100_000)), Err(ExprError::TooDeep));
    }
}
