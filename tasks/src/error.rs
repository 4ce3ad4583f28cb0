//! The crate's error type. Each message says what was wrong and what to do about it.

use std::path::PathBuf;

/// Everything that can go wrong when choosing a task or loading a dataset.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The spec names neither a built-in task nor a `.jsonl` file.
    #[error(
        "unknown task '{name}': built-in tasks are addition, multiplication, countdown, \
         sorting, or give a .jsonl path"
    )]
    UnknownTask {
        /// The name as given.
        name: String,
    },

    /// The text after `name:` is not a whole number.
    #[error("difficulty '{given}' for task '{task}' is not a whole number: write e.g. '{task}:3'")]
    BadDifficulty {
        /// The task the difficulty was for.
        task: String,
        /// The difficulty text as given.
        given: String,
    },

    /// The difficulty is a number but outside what the task supports.
    #[error("difficulty {difficulty} is out of range for task '{task}': use {min}..={max}")]
    DifficultyOutOfRange {
        /// The task the difficulty was for.
        task: String,
        /// The difficulty as given.
        difficulty: u32,
        /// Smallest supported difficulty.
        min: u32,
        /// Largest supported difficulty.
        max: u32,
    },

    /// No verifier with this name is registered.
    #[error("unknown verifier '{name}': registered verifiers are {known}; register it first")]
    UnknownVerifier {
        /// The name as given.
        name: String,
        /// The registered names, comma-separated.
        known: String,
    },

    /// The dataset file could not be read.
    #[error("cannot read dataset {}: {source}; check the path", path.display())]
    Io {
        /// The dataset file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// A dataset line is not a JSON object with string `prompt` and `answer`.
    #[error(
        "{}:{line}: malformed dataset line: {reason}; each line must look like \
         {{\"prompt\": \"...\", \"answer\": \"...\"}}",
        path.display()
    )]
    MalformedLine {
        /// The dataset file.
        path: PathBuf,
        /// 1-based line number in the file.
        line: usize,
        /// What the parser objected to.
        reason: String,
    },

    /// A dataset's held-out share is not in `[0, 1)`.
    #[error(
        "eval_fraction {given} is not in [0, 1): it is the share of a dataset's prompts held \
         out for evaluation (e.g. 0.1; 0 holds none out), and the rest must be left to train on"
    )]
    BadEvalFraction {
        /// The fraction as given.
        given: f64,
    },

    /// An eval file was given with a built-in task, which has a held-out split of its own.
    #[error(
        "eval data {} needs a .jsonl training dataset, but task '{task}' is built in and holds \
         out its own eval prompts: drop the eval data or train on a .jsonl file",
        eval.display()
    )]
    EvalDataNeedsDataset {
        /// The task spec as given.
        task: String,
        /// The eval file.
        eval: PathBuf,
    },

    /// The dataset file has no problems in it.
    #[error(
        "dataset {} has no problems: add one JSON object per line, \
         {{\"prompt\": \"...\", \"answer\": \"...\"}}",
        path.display()
    )]
    EmptyDataset {
        /// The dataset file.
        path: PathBuf,
    },
}
