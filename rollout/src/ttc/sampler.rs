//! The samplers `oxrl eval --sampler` names, and their spelling.
//!
//! | spec | what it returns per prompt |
//! |---|---|
//! | `greedy` | the argmax continuation |
//! | `sample` | one sample at the sampling options (temperature, top-p, top-k, min-p) |
//! | `beam:W`, `beam-mean:W` | the best of a width-W beam search, by total / mean log-prob |
//! | `best-of:N`, `best-of-mean:N` | of N samples, the one with the highest total / mean log-prob |
//! | `best-of-rm:N` | of N samples, the one a reward model (`--rm DIR`) scores highest |
//! | `best-of-oracle:N` | of N samples, a correct one if any (an upper bound, = pass@N) |
//! | `majority:N` | the answer most of N samples agree on (the verifier extracts answers) |
//! | `pass:N` | N samples, scored by their mean reward (pass@1) and pass@k |
//! | `power`, `power:N` | 1 (or N) power-sampled completions, target `p^alpha` |
//! | `per-prompt:N,STEPS` | greedy answer after STEPS RL steps on that prompt alone, each on N samples rewarded by agreeing with their majority (`per_prompt.rs`) |
//!
//! A list of samplers is comma-separated ([`parse_list`]); a piece that starts with a digit
//! continues the one before it, so `majority:8,per-prompt:8,2` is two samplers.

use super::best_of::Selection;
use std::fmt;
use std::str::FromStr;

/// One way of turning a model and a prompt into an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sampler {
    /// Argmax decoding.
    Greedy,
    /// One sample at the sampling options.
    Sample,
    /// Beam search of width `width`.
    Beam {
        width: usize,
        length_normalised: bool,
    },
    /// Best of `n` samples by `selection`.
    BestOf { n: usize, selection: Selection },
    /// Best of `n` samples by a reward model's score (a [`super::SampleScorer`] the caller
    /// lends).
    BestOfRm { n: usize },
    /// Majority vote over the answers of `n` samples.
    Majority { n: usize },
    /// `n` samples per prompt, for pass@k.
    PassAtK { n: usize },
    /// `chains` independent power-sampling chains per prompt.
    Power { chains: usize },
    /// Per-prompt optimization: `steps` RL steps on the prompt alone, each on `n` samples
    /// rewarded by agreement with their majority answer, then the greedy answer.
    PerPrompt { n: usize, steps: usize },
}

/// A `--sampler` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad sampler {spec:?}: {reason}; samplers are greedy, sample, beam:W, beam-mean:W, \
     best-of:N, best-of-mean:N, best-of-rm:N, best-of-oracle:N, majority:N, pass:N, power, power:N, \
     per-prompt:N,STEPS"
)]
pub struct SamplerSpecError {
    /// The value given.
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Sampler {
    /// Samples (or chains, or beams' results) each prompt's answer is chosen from; for
    /// `per-prompt:N,STEPS`, the completions it draws: N per step and the greedy answer.
    pub fn samples_per_problem(&self) -> usize {
        match *self {
            Sampler::Greedy | Sampler::Sample | Sampler::Beam { .. } => 1,
            Sampler::BestOf { n, .. }
            | Sampler::BestOfRm { n }
            | Sampler::Majority { n }
            | Sampler::PassAtK { n } => n,
            Sampler::Power { chains } => chains,
            Sampler::PerPrompt { n, steps } => n * steps + 1,
        }
    }

    /// Whether it changes the weights (and so needs a learner to evaluate).
    pub fn needs_learner(&self) -> bool {
        matches!(self, Sampler::PerPrompt { .. })
    }

    /// Whether it ranks samples by a reward model (and so needs one to evaluate).
    pub fn needs_scorer(&self) -> bool {
        matches!(self, Sampler::BestOfRm { .. })
    }

    /// Whether the figure needs the reference answer to pick (not a deployable method).
    pub fn is_oracle(&self) -> bool {
        matches!(
            self,
            Sampler::BestOf {
                selection: Selection::Oracle,
                ..
            }
        )
    }
}

impl FromStr for Sampler {
    type Err = SamplerSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| SamplerSpecError {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = spec.trim().strip_prefix("per-prompt") {
            return per_prompt(rest).map_err(|reason| err(&reason));
        }
        let (name, count) = match spec.trim().split_once(':') {
            Some((name, n)) => {
                let n: usize = n
                    .trim()
                    .parse()
                    .map_err(|_| err("the count after ':' must be a whole number"))?;
                if n == 0 {
                    return Err(err("the count after ':' must be >= 1"));
                }
                (name.trim(), Some(n))
            }
            None => (spec.trim(), None),
        };
        let need = |n: Option<usize>| n.ok_or_else(|| err("this sampler needs a count, e.g. :16"));
        let none = |n: Option<usize>, s: Sampler| match n {
            Some(_) => Err(err("this sampler takes no count")),
            None => Ok(s),
        };
        match name {
            "greedy" => none(count, Sampler::Greedy),
            "sample" => none(count, Sampler::Sample),
            "beam" | "beam-mean" => Ok(Sampler::Beam {
                width: need(count)?,
                length_normalised: name == "beam-mean",
            }),
            "best-of" | "best-of-mean" | "best-of-oracle" => Ok(Sampler::BestOf {
                n: need(count)?,
                selection: match name {
                    "best-of" => Selection::TotalLogprob,
                    "best-of-mean" => Selection::MeanLogprob,
                    _ => Selection::Oracle,
                },
            }),
            "best-of-rm" => Ok(Sampler::BestOfRm { n: need(count)? }),
            "majority" => Ok(Sampler::Majority { n: need(count)? }),
            "pass" => Ok(Sampler::PassAtK { n: need(count)? }),
            "power" => Ok(Sampler::Power {
                chains: count.unwrap_or(1),
            }),
            _ => Err(err("unknown sampler")),
        }
    }
}

impl fmt::Display for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Sampler::Greedy => write!(f, "greedy"),
            Sampler::Sample => write!(f, "sample"),
            Sampler::Beam {
                width,
                length_normalised,
            } => {
                let name = if length_normalised {
                    "beam-mean"
                } else {
                    "beam"
                };
                write!(f, "{name}:{width}")
            }
            Sampler::BestOf { n, selection } => {
                let name = match selection {
                    Selection::TotalLogprob => "best-of",
                    Selection::MeanLogprob => "best-of-mean",
                    Selection::Oracle => "best-of-oracle",
                };
                write!(f, "{name}:{n}")
            }
            Sampler::BestOfRm { n } => write!(f, "best-of-rm:{n}"),
            Sampler::Majority { n } => write!(f, "majority:{n}"),
            Sampler::PassAtK { n } => write!(f, "pass:{n}"),
            Sampler::Power { chains: 1 } => write!(f, "power"),
            Sampler::Power { chains } => write!(f, "power:{chains}"),
            Sampler::PerPrompt { n, steps } => write!(f, "per-prompt:{n},{steps}"),
        }
    }
}

/// `per-prompt`'s `:N,STEPS` (what follows the name), or what is wrong with it.
fn per_prompt(rest: &str) -> Result<Sampler, String> {
    let usage = "per-prompt needs N samples per step and STEPS, e.g. per-prompt:8,2";
    let (n, steps) = rest
        .trim()
        .strip_prefix(':')
        .and_then(|counts| counts.split_once(','))
        .ok_or(usage)?;
    let whole = |s: &str, what: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| format!("{what} in per-prompt:N,STEPS must be a whole number"))
    };
    let (n, steps) = (whole(n, "N")?, whole(steps, "STEPS")?);
    if n < 2 {
        // One sample always agrees with its own majority: every reward 1, nothing to learn.
        return Err(
            "N in per-prompt:N,STEPS must be >= 2 (one sample always agrees with \
                    itself, so it has nothing to learn from)"
                .into(),
        );
    }
    Ok(Sampler::PerPrompt { n, steps })
}

/// A comma-separated list of samplers. A piece that starts with a digit belongs to the one
/// before it (`per-prompt:8,2`), so `greedy,per-prompt:8,2,majority:16` is three samplers.
pub fn parse_list(list: &str) -> Result<Vec<Sampler>, SamplerSpecError> {
    let mut specs: Vec<String> = Vec::new();
    for piece in list.split(',') {
        match specs.last_mut() {
            Some(last) if piece.trim_start().starts_with(|c: char| c.is_ascii_digit()) => {
                last.push(',');
                last.push_str(piece);
            }
            _ => specs.push(piece.to_string()),
        }
    }
    specs.iter().map(|s| s.parse()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_round_trips() {
        for spec in [
            "greedy",
            "sample",
            "beam:4",
            "beam-mean:8",
            "best-of:16",
            "best-of-mean:16",
            "best-of-oracle:16",
            "best-of-rm:16",
            "majority:16",
            "pass:16",
            "power",
            "power:4",
            "per-prompt:8,2",
            "per-prompt:2,0",
        ] {
            let s: Sampler = spec.parse().unwrap();
            assert_eq!(s.to_string(), spec);
        }
        assert_eq!(
            " best-of : 3 ".parse::<Sampler>().unwrap(),
            Sampler::BestOf {
                n: 3,
                selection: Selection::TotalLogprob
            }
        );
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, reason) in [
            ("beam", "needs a count"),
            ("best-of-rm", "needs a count"),
            ("greedy:2", "takes no count"),
            ("majority:x", "whole number"),
            ("pass:0", ">= 1"),
            ("nucleus", "unknown sampler"),
            ("per-prompt:8", "needs N samples per step and STEPS"),
            ("per-prompt", "needs N samples per step and STEPS"),
            ("per-prompt:0,1", "must be >= 2"),
            ("per-prompt:1,3", "must be >= 2"),
            (
                "per-prompt:8,x",
                "STEPS in per-prompt:N,STEPS must be a whole number",
            ),
            (
                "per-prompt:-1,2",
                "N in per-prompt:N,STEPS must be a whole number",
            ),
        ] {
            let e = spec.parse::<Sampler>().unwrap_err().to_string();
            assert!(
                e.contains(reason) && e.contains("best-of:N") && e.contains("per-prompt:N,STEPS"),
                "{spec}: {e}"
            );
        }
        assert_eq!(
            "per-prompt:8,2".parse::<Sampler>().unwrap(),
            Sampler::PerPrompt { n: 8, steps: 2 }
        );
    }

    #[test]
    fn lists_keep_per_prompt_counts_together() {
        assert_eq!(
            parse_list("greedy,per-prompt:8,2,majority:16").unwrap(),
            vec![
                Sampler::Greedy,
                Sampler::PerPrompt { n: 8, steps: 2 },
                Sampler::Majority { n: 16 }
            ]
        );
        assert_eq!(parse_list("beam:2,power").unwrap().len(), 2);
        // A number with nothing before it is not a sampler.
        assert!(parse_list("8,greedy").is_err());
        assert!(parse_list("per-prompt:8").is_err());
    }
}
