//! Problems read from a JSONL file, one `{"prompt": "...", "answer": "..."}` object a line.
//!
//! `solution` is optional and defaults to the answer; a numeric `answer` is accepted and
//! kept as written; other fields are ignored, so exported datasets load without editing.
//! Blank lines are skipped. A dataset has no train/eval partition of its own: both splits
//! return the same lines, so pass separate train and eval files.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::error::TaskError;
use crate::problem::{Problem, ProblemSource, Split};
use crate::verifier::Verifier;

/// A fixed list of problems loaded from a JSONL file.
pub struct Dataset {
    name: String,
    problems: Vec<Problem>,
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
    /// Loads `path`; problems are named `<file stem>/<index>`, index counting non-blank lines
    /// from 0, and scored by `verifier`.
    pub fn load(path: &Path, verifier: Arc<dyn Verifier>) -> Result<Self, TaskError> {
        let text = fs::read_to_string(path).map_err(|source| TaskError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| "dataset".to_string());
        let problems = parse_lines(&name, &text, path)?;
        Ok(Self {
            name,
            problems,
            verifier,
        })
    }
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

impl ProblemSource for Dataset {
    fn name(&self) -> &str {
        &self.name
    }

    /// The same problem for both splits; `index` wraps around the file.
    fn problem(&self, _split: Split, index: u64) -> Problem {
        // Loading refuses empty files, so the modulus is positive.
        let at = index % self.problems.len() as u64;
        self.problems[at as usize].clone()
    }

    fn len(&self, _split: Split) -> Option<u64> {
        Some(self.problems.len() as u64)
    }

    fn verifier(&self) -> Arc<dyn Verifier> {
        Arc::clone(&self.verifier)
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn loads_lines_skipping_blanks() {
        let file = file_with(concat!(
            "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n",
            "\n",
            "  \n",
            "{\"prompt\": \"2+2=\", \"answer\": 4, \"solution\": \"2+2=4\", \"level\": 1}\n",
        ));
        let dataset = load(&file).unwrap();
        let stem = file
            .path()
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
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
            "splits share the lines"
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
