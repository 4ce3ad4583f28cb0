//! Problems read from a JSONL file, one `{"prompt": "...", "answer": "..."}` object a line.
//!
//! `solution` is optional and defaults to the answer; a numeric `answer` is accepted and
//! kept as written; other fields are ignored, so exported datasets load without editing.
//! Blank lines are skipped. Problems are named `<file stem>/<line>`, `line` counting the
//! file's non-blank lines from 0, so a problem keeps its id whichever split it falls in.
//!
//! # Train and eval splits
//!
//! How a file is divided is a [`DatasetSplit`]:
//!
//! * [`DatasetSplit::Hashed`] (the default, with [`DEFAULT_EVAL_FRACTION`] = 0.1): a line is
//!   eval iff a fixed 64-bit hash of its prompt (the one the procedural tasks split by) falls
//!   in the lowest `eval_fraction` of the hash range. The split of a line depends on its
//!   prompt alone — not on line order, other lines, or the seed — so repeated prompts land on
//!   the same side and a held-out prompt never trains. Two degenerate cases bend this rule,
//!   as they do for the procedural tasks' tiny spaces: if every prompt hashes into eval, the
//!   one with the largest hash moves to train (training always has a problem); if none does
//!   while `eval_fraction > 0` and the file has two or more distinct prompts, the one with
//!   the smallest hash moves to eval. `eval_fraction = 0` holds nothing out.
//! * [`DatasetSplit::EvalFile`]: every line of the data file trains and every line of a
//!   second file evaluates.
//! * [`DatasetSplit::Whole`]: both splits are the whole file (no held-out set), for a file
//!   that is only evaluated, e.g. a test set given to `oxrl eval`.
//!
//! Within a split, index `i` is the split's `i`-th line in file order and wraps around the
//! split. A split may be empty (a one-prompt file, or `eval_fraction = 0`): `len` then says
//! `Some(0)`, and callers should size evaluation with [`crate::capped_eval_n`] rather than
//! ask for a problem of an empty split, which panics.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::error::TaskError;
use crate::problem::{Problem, ProblemSource, Split};
use crate::rng::prompt_hash;
use crate::verifier::Verifier;

/// The share of a dataset's prompts held out for evaluation when no eval file is given.
pub const DEFAULT_EVAL_FRACTION: f64 = 0.1;

/// How a dataset file is divided into train and eval problems (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub enum DatasetSplit {
    /// A line is eval iff the hash of its prompt falls in the lowest `eval_fraction` of the
    /// hash range; `eval_fraction` must be in `[0, 1)`.
    Hashed {
        /// The expected share of prompts held out, e.g. 0.1.
        eval_fraction: f64,
    },
    /// Every line of the data file trains; every line of this file evaluates.
    EvalFile(PathBuf),
    /// Both splits are every line of the file: nothing is held out. Only for a file that is
    /// evaluated and never trained on.
    Whole,
}

impl Default for DatasetSplit {
    /// Hashed, holding out [`DEFAULT_EVAL_FRACTION`] of the prompts.
    fn default() -> Self {
        DatasetSplit::Hashed {
            eval_fraction: DEFAULT_EVAL_FRACTION,
        }
    }
}

/// A fixed list of problems loaded from a JSONL file, divided into train and eval.
pub struct Dataset {
    name: String,
    train: Vec<Problem>,
    eval: Vec<Problem>,
    verifier: Arc<dyn Verifier>,
}

/// One line of the file as written.
#[derive(Deserialize)]
struct Line {
    prompt: String,
    answer: AnswerText,
    solution: Option<String>,
}

/// Answers are text, but numbers are common in exported datasets and unambiguous.
#[derive(Deserialize)]
#[serde(untagged)]
enum AnswerText {
    Text(String),
    Number(serde_json::Number),
}

impl Dataset {
    /// Loads `path` with the default split (hashed, [`DEFAULT_EVAL_FRACTION`] held out);
    /// problems are scored by `verifier`.
    pub fn load(path: &Path, verifier: Arc<dyn Verifier>) -> Result<Self, TaskError> {
        Self::load_split(path, &DatasetSplit::default(), verifier)
    }

    /// Loads `path`, divided into train and eval as `split` says; problems are scored by
    /// `verifier`. The source is named after `path`'s stem. Errors name the file at fault:
    /// a missing or unreadable file (data or eval), a malformed line, a file without
    /// problems, or an `eval_fraction` outside `[0, 1)`.
    pub fn load_split(
        path: &Path,
        split: &DatasetSplit,
        verifier: Arc<dyn Verifier>,
    ) -> Result<Self, TaskError> {
        if let DatasetSplit::Hashed { eval_fraction } = *split {
            if !(0.0..1.0).contains(&eval_fraction) {
                return Err(TaskError::BadEvalFraction {
                    given: eval_fraction,
                });
            }
        }
        let (name, problems) = read(path)?;
        let (train, eval) = match split {
            DatasetSplit::Hashed { eval_fraction } => partition(problems, *eval_fraction),
            DatasetSplit::EvalFile(eval_path) => (problems, read(eval_path)?.1),
            DatasetSplit::Whole => (problems.clone(), problems),
        };
        Ok(Self {
            name,
            train,
            eval,
            verifier,
        })
    }

    /// Loads `train` for the train split and all of `eval` for the eval split; shorthand for
    /// [`Dataset::load_split`] with [`DatasetSplit::EvalFile`].
    pub fn load_with_eval_file(
        train: &Path,
        eval: &Path,
        verifier: Arc<dyn Verifier>,
    ) -> Result<Self, TaskError> {
        Self::load_split(train, &DatasetSplit::EvalFile(eval.to_path_buf()), verifier)
    }

    fn split(&self, split: Split) -> &[Problem] {
        match split {
            Split::Train => &self.train,
            Split::Eval => &self.eval,
        }
    }
}

/// The file's stem (the source name and id prefix) and its problems; an empty file is an
/// error.
fn read(path: &Path) -> Result<(String, Vec<Problem>), TaskError> {
    let text = fs::read_to_string(path).map_err(|source| TaskError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".to_string());
    let problems = parse_lines(&name, &text, path)?;
    Ok((name, problems))
}

fn parse_lines(name: &str, text: &str, path: &Path) -> Result<Vec<Problem>, TaskError> {
    let mut problems = Vec::new();
    for (line_index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(line).map_err(|err| TaskError::MalformedLine {
            path: PathBuf::from(path),
            line: line_index + 1,
            reason: err.to_string(),
        })?;
        let answer = match parsed.answer {
            AnswerText::Text(text) => text,
            AnswerText::Number(number) => number.to_string(),
        };
        problems.push(Problem {
            id: format!("{name}/{}", problems.len()),
            prompt: parsed.prompt,
            solution: parsed.solution.unwrap_or_else(|| answer.clone()),
            answer,
        });
    }
    if problems.is_empty() {
        return Err(TaskError::EmptyDataset {
            path: path.to_path_buf(),
        });
    }
    Ok(problems)
}

/// Divides `problems` (not empty) into (train, eval) by prompt hash, keeping file order;
/// `eval_fraction` is in `[0, 1)`.
fn partition(problems: Vec<Problem>, eval_fraction: f64) -> (Vec<Problem>, Vec<Problem>) {
    // eval iff hash < fraction * 2^64; the cast is exact enough and `< 1` keeps it in range.
    let threshold = (eval_fraction * 18_446_744_073_709_551_616.0) as u64;
    let hashes: Vec<u64> = problems.iter().map(|p| prompt_hash(&p.prompt)).collect();
    let mut is_eval: Vec<bool> = hashes.iter().map(|&h| h < threshold).collect();
    let mut move_all = |hash: u64, to_eval: bool| {
        for (e, &h) in is_eval.iter_mut().zip(&hashes) {
            if h == hash {
                *e = to_eval;
            }
        }
    };
    let (min, max) = (
        *hashes.iter().min().expect("a dataset is not empty"),
        *hashes.iter().max().expect("a dataset is not empty"),
    );
    if eval_fraction > 0.0 {
        if hashes.iter().all(|&h| h < threshold) {
            move_all(max, false);
        } else if hashes.iter().all(|&h| h >= threshold) && min != max {
            move_all(min, true);
        }
    }
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for (problem, to_eval) in problems.into_iter().zip(is_eval) {
        if to_eval {
            eval.push(problem);
        } else {
            train.push(problem);
        }
    }
    (train, eval)
}

impl ProblemSource for Dataset {
    fn name(&self) -> &str {
        &self.name
    }

    /// The split's `index`-th line in file order; `index` wraps around the split.
    ///
    /// # Panics
    ///
    /// If the split is empty (`len(split) == Some(0)`); see [`crate::capped_eval_n`].
    fn problem(&self, split: Split, index: u64) -> Problem {
        let problems = self.split(split);
        assert!(
            !problems.is_empty(),
            "dataset {} has no {split} problems: check len({split}) (capped_eval_n) first",
            self.name
        );
        let at = index % problems.len() as u64;
        problems[at as usize].clone()
    }

    fn len(&self, split: Split) -> Option<u64> {
        Some(self.split(split).len() as u64)
    }

    fn verifier(&self) -> Arc<dyn Verifier> {
        Arc::clone(&self.verifier)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io::Write;

    use super::*;
    use crate::numeric::NumericVerifier;

    fn file_with(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::Builder::new()
            .suffix(".jsonl")
            .tempfile()
            .unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        file
    }

    fn load(file: &tempfile::NamedTempFile) -> Result<Dataset, TaskError> {
        Dataset::load(file.path(), Arc::new(NumericVerifier))
    }

    fn load_split(
        file: &tempfile::NamedTempFile,
        split: DatasetSplit,
    ) -> Result<Dataset, TaskError> {
        Dataset::load_split(file.path(), &split, Arc::new(NumericVerifier))
    }

    fn hashed(eval_fraction: f64) -> DatasetSplit {
        DatasetSplit::Hashed { eval_fraction }
    }

    fn stem(file: &tempfile::NamedTempFile) -> String {
        file.path()
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    }

    /// `n` distinct problems, one a line, in the given order of indices.
    fn lines(order: impl Iterator<Item = usize>) -> String {
        order
            .map(|i| {
                format!(
                    "{{\"prompt\": \"{i}+{}=\", \"answer\": \"{}\"}}\n",
                    i + 3,
                    2 * i + 3
                )
            })
            .collect()
    }

    /// Every problem of a split, in index order.
    fn all(dataset: &Dataset, split: Split) -> Vec<Problem> {
        (0..dataset.len(split).unwrap())
            .map(|i| dataset.problem(split, i))
            .collect()
    }

    fn prompts(problems: &[Problem]) -> HashSet<String> {
        problems.iter().map(|p| p.prompt.clone()).collect()
    }

    #[test]
    fn loads_lines_skipping_blanks() {
        let file = file_with(concat!(
            "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n",
            "\n",
            "  \n",
            "{\"prompt\": \"2+2=\", \"answer\": 4, \"solution\": \"2+2=4\", \"level\": 1}\n",
        ));
        let dataset = load_split(&file, DatasetSplit::Whole).unwrap();
        let stem = stem(&file);
        assert_eq!(dataset.name(), stem);
        assert_eq!(dataset.len(Split::Train), Some(2));
        assert_eq!(dataset.len(Split::Eval), Some(2));
        let first = dataset.problem(Split::Train, 0);
        assert_eq!(first.id, format!("{stem}/0"));
        assert_eq!(
            (first.prompt.as_str(), first.answer.as_str()),
            ("1+1=", "2")
        );
        assert_eq!(first.solution, "2", "solution defaults to the answer");
        let second = dataset.problem(Split::Eval, 1);
        assert_eq!(second.id, format!("{stem}/1"));
        assert_eq!(
            (second.answer.as_str(), second.solution.as_str()),
            ("4", "2+2=4")
        );
        assert_eq!(dataset.problem(Split::Train, 5), second, "index wraps");
        assert_eq!(
            dataset.problem(Split::Eval, 0),
            first,
            "whole: the splits share the lines"
        );
    }

    #[test]
    fn hashed_splits_are_disjoint_and_cover_the_file() {
        let n = 400;
        let file = file_with(&lines(0..n));
        let dataset = load(&file).unwrap();
        let (train, eval) = (all(&dataset, Split::Train), all(&dataset, Split::Eval));
        assert_eq!(
            train.len() + eval.len(),
            n,
            "every line is in exactly one split"
        );
        let (train_prompts, eval_prompts) = (prompts(&train), prompts(&eval));
        assert!(train_prompts.is_disjoint(&eval_prompts));
        let ids: HashSet<String> = train.iter().chain(&eval).map(|p| p.id.clone()).collect();
        let expected: HashSet<String> = (0..n).map(|i| format!("{}/{i}", stem(&file))).collect();
        assert_eq!(ids, expected, "ids are file lines, whichever the split");
        // Default 0.1 of 400: 40 expected, binomial sd 6.
        assert!(
            (22..=58).contains(&eval.len()),
            "{} of {n} in eval",
            eval.len()
        );
        let line_of = |p: &Problem| p.id[stem(&file).len() + 1..].parse::<usize>().unwrap();
        let eval_lines: Vec<usize> = eval.iter().map(line_of).collect();
        assert!(eval_lines.windows(2).all(|w| w[0] < w[1]), "file order");

        let wider = load_split(&file, hashed(0.3)).unwrap();
        let held_out = wider.len(Split::Eval).unwrap();
        // 120 expected, binomial sd 9.
        assert!((93..=147).contains(&held_out), "{held_out} of {n} in eval");
        assert_eq!(wider.len(Split::Train).unwrap() + held_out, n as u64);
        assert!(
            eval_prompts.is_subset(&prompts(&all(&wider, Split::Eval))),
            "a larger fraction only adds prompts to eval"
        );
    }

    #[test]
    fn the_split_depends_on_the_prompt_not_the_line_order() {
        let forward = load(&file_with(&lines(0..300))).unwrap();
        let mut text = lines((0..300).rev());
        text.push_str("{\"prompt\": \"7+10=\", \"answer\": \"17\"}\n"); // a repeat of line 7
        let backward = load(&file_with(&text)).unwrap();
        for split in [Split::Train, Split::Eval] {
            assert_eq!(
                prompts(&all(&forward, split)),
                prompts(&all(&backward, split)),
                "{split}"
            );
        }
        let side = |prompt: &str| {
            all(&backward, Split::Eval)
                .iter()
                .filter(|p| p.prompt == prompt)
                .count()
        };
        assert!(
            side("7+10=") == 0 || side("7+10=") == 2,
            "repeats stay together"
        );
    }

    #[test]
    fn eval_fraction_zero_holds_nothing_out_and_bad_fractions_are_errors() {
        let file = file_with(&lines(0..50));
        let none = load_split(&file, hashed(0.0)).unwrap();
        assert_eq!(
            (none.len(Split::Train), none.len(Split::Eval)),
            (Some(50), Some(0))
        );
        for bad in [1.0, 1.5, -0.1, f64::NAN] {
            let err = load_split(&file, hashed(bad)).err().expect("bad fraction");
            assert!(matches!(err, TaskError::BadEvalFraction { .. }), "{err:?}");
            assert!(err.to_string().contains("eval_fraction"), "{err}");
        }
    }

    #[test]
    fn tiny_files_always_keep_a_train_problem() {
        let one = load(&file_with("{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n")).unwrap();
        assert_eq!(
            (one.len(Split::Train), one.len(Split::Eval)),
            (Some(1), Some(0))
        );
        // Two prompts: whichever way they hash, each split gets one.
        for pair in [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10)] {
            let text = lines([pair.0, pair.1].into_iter());
            for fraction in [0.01, 0.1, 0.5, 0.99] {
                let two = load_split(&file_with(&text), hashed(fraction)).unwrap();
                assert_eq!(
                    (two.len(Split::Train), two.len(Split::Eval)),
                    (Some(1), Some(1)),
                    "{pair:?} at {fraction}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "has no eval problems")]
    fn an_empty_split_panics_when_asked_for_a_problem() {
        let one = load(&file_with("{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n")).unwrap();
        one.problem(Split::Eval, 0);
    }

    #[test]
    fn an_eval_file_is_the_eval_split() {
        let train_file = file_with(&lines(0..30));
        let eval_file = file_with(&lines(100..105));
        let dataset = Dataset::load_with_eval_file(
            train_file.path(),
            eval_file.path(),
            Arc::new(NumericVerifier),
        )
        .unwrap();
        assert_eq!(dataset.name(), stem(&train_file));
        assert_eq!(
            dataset.len(Split::Train),
            Some(30),
            "all of the data file trains"
        );
        assert_eq!(
            dataset.len(Split::Eval),
            Some(5),
            "all of the eval file evaluates"
        );
        let eval = all(&dataset, Split::Eval);
        assert_eq!(eval[0].prompt, "100+103=");
        assert_eq!(eval[4].id, format!("{}/4", stem(&eval_file)));
        assert_eq!(all(&dataset, Split::Train)[29].prompt, "29+32=");
        assert_eq!(dataset.problem(Split::Eval, 7), eval[2], "index wraps");
    }

    #[test]
    fn a_missing_or_empty_eval_file_is_an_error_naming_it() {
        let train_file = file_with(&lines(0..3));
        let missing = Path::new("/no/such/eval.jsonl");
        let err =
            Dataset::load_with_eval_file(train_file.path(), missing, Arc::new(NumericVerifier))
                .err()
                .expect("missing eval file is an error");
        assert!(matches!(err, TaskError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("/no/such/eval.jsonl"), "{err}");

        let empty = file_with("\n \n");
        let err = Dataset::load_with_eval_file(
            train_file.path(),
            empty.path(),
            Arc::new(NumericVerifier),
        )
        .err()
        .expect("empty eval file is an error");
        assert!(matches!(err, TaskError::EmptyDataset { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&empty.path().display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let file = file_with(concat!(
            "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n",
            "\n",
            "{\"prompt\": \"2+2=\"}\n",
        ));
        let err = load(&file).err().expect("missing answer is an error");
        assert!(
            matches!(err, TaskError::MalformedLine { line: 3, .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!("{}:3:", file.path().display())),
            "{message}"
        );
        assert!(message.contains("answer"), "{message}");

        let file = file_with("{\"prompt\": \"x\", \"answer\": \"y\"}\nnot json\n");
        let err = load(&file).err().expect("not JSON is an error");
        assert!(
            matches!(err, TaskError::MalformedLine { line: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn empty_file_is_an_error() {
        for contents in ["", "\n  \n"] {
            let err = load(&file_with(contents)).err().expect("empty is an error");
            assert!(matches!(err, TaskError::EmptyDataset { .. }), "{err:?}");
        }
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = Dataset::load(Path::new("/no/such/file.jsonl"), Arc::new(NumericVerifier))
            .err()
            .expect("missing file is an error");
        assert!(matches!(err, TaskError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("/no/such/file.jsonl"));
    }
}
