//! Choosing a problem source by name: the built-in tasks and the `--task` spec syntax.
//!
//! A spec is `name` or `name:difficulty` for a built-in task (`addition`, `addition:3`), or a
//! path ending in `.jsonl` for a dataset, scored by `numeric` unless a verifier is named after
//! an `@` (`data/capitals.jsonl@exact`). [`from_spec`] holds out a dataset's eval split by
//! prompt hash ([`DatasetSplit::default`]); [`from_spec_split`] takes the split to use, e.g.
//! an eval file.

use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;

use crate::arithmetic::{Arithmetic, Operation};
use crate::countdown::{self, Countdown, CountdownVerifier};
use crate::dataset::{Dataset, DatasetSplit};
use crate::error::TaskError;
use crate::guessing::{self, Guessing};
use crate::numeric::NumericVerifier;
use crate::problem::ProblemSource;
use crate::procedural::Procedural;
use crate::registry::VerifierRegistry;
use crate::sorting::{self, Sorting, SortingVerifier};

const BUILTIN_NAMES: &[&str] = &[
    "addition",
    "multiplication",
    "countdown",
    "sorting",
    "guess",
];

/// Verifier for datasets whose spec names none.
const DEFAULT_DATASET_VERIFIER: &str = "numeric";

/// The names of the built-in procedural tasks.
pub fn builtin_names() -> &'static [&'static str] {
    BUILTIN_NAMES
}

/// A built-in task at `difficulty` (its default if None), deterministic in `seed`; its name
/// is `<task>-<difficulty>`, e.g. `addition-3`.
pub fn builtin(
    name: &str,
    difficulty: Option<u32>,
    seed: u64,
) -> Result<Box<dyn ProblemSource>, TaskError> {
    let (default, range) = match name {
        "addition" => (3, Operation::Add.digits()),
        "multiplication" => (2, Operation::Multiply.digits()),
        "countdown" => (3, countdown::COUNTS),
        "sorting" => (4, sorting::LENGTHS),
        "guess" => (4, guessing::BITS),
        _ => {
            return Err(TaskError::UnknownTask {
                name: name.to_string(),
            })
        }
    };
    let difficulty = checked_difficulty(name, difficulty.unwrap_or(default), range)?;
    let source_name = format!("{name}-{difficulty}");
    let source: Box<dyn ProblemSource> = match name {
        "addition" | "multiplication" => {
            let operation = if name == "addition" {
                Operation::Add
            } else {
                Operation::Multiply
            };
            Box::new(Procedural::new(
                source_name,
                seed,
                Arithmetic::new(operation, difficulty),
                Arc::new(NumericVerifier),
            ))
        }
        "countdown" => Box::new(Procedural::new(
            source_name,
            seed,
            Countdown::new(difficulty),
            Arc::new(CountdownVerifier),
        )),
        "guess" => Box::new(Procedural::new(
            source_name,
            seed,
            Guessing::new(difficulty),
            Arc::new(NumericVerifier),
        )),
        _ => Box::new(Procedural::new(
            source_name,
            seed,
            Sorting::new(difficulty),
            Arc::new(SortingVerifier),
        )),
    };
    Ok(source)
}

fn checked_difficulty(
    task: &str,
    difficulty: u32,
    range: RangeInclusive<u32>,
) -> Result<u32, TaskError> {
    if range.contains(&difficulty) {
        Ok(difficulty)
    } else {
        Err(TaskError::DifficultyOutOfRange {
            task: task.to_string(),
            difficulty,
            min: *range.start(),
            max: *range.end(),
        })
    }
}

/// "addition", "addition:3" (name:difficulty) or a path ending in .jsonl (dataset; verifier
/// "numeric" unless the spec is "path.jsonl@exact"). `seed` only affects built-in tasks. A
/// dataset holds out [`crate::DEFAULT_EVAL_FRACTION`] of its prompts by hash for the eval split
/// (see [`from_spec_split`] to choose otherwise).
pub fn from_spec(
    spec: &str,
    seed: u64,
    registry: &VerifierRegistry,
) -> Result<Box<dyn ProblemSource>, TaskError> {
    from_spec_split(spec, seed, registry, &DatasetSplit::default())
}

/// [`from_spec`], with a dataset divided into train and eval as `split` says: by prompt hash
/// with a chosen `eval_fraction`, by a separate eval file, or not at all
/// ([`DatasetSplit::Whole`], for a file that is only evaluated). Built-in tasks keep their own
/// split (a prompt is eval iff its hash is 0 mod 10) and ignore `Hashed` and `Whole`; an eval
/// file with a built-in task is an error ([`TaskError::EvalDataNeedsDataset`]).
pub fn from_spec_split(
    spec: &str,
    seed: u64,
    registry: &VerifierRegistry,
    split: &DatasetSplit,
) -> Result<Box<dyn ProblemSource>, TaskError> {
    let spec = spec.trim();
    // Paths may contain ':' (and, rarely, '@'), so the dataset forms are recognised first,
    // by the `.jsonl` before the last '@' or at the very end.
    if let Some((path, verifier)) = spec.rsplit_once('@') {
        if path.ends_with(".jsonl") {
            let verifier = registry.get(verifier)?;
            return Ok(Box::new(Dataset::load_split(
                Path::new(path),
                split,
                verifier,
            )?));
        }
    }
    if spec.ends_with(".jsonl") {
        let verifier = registry.get(DEFAULT_DATASET_VERIFIER)?;
        return Ok(Box::new(Dataset::load_split(
            Path::new(spec),
            split,
            verifier,
        )?));
    }
    if let DatasetSplit::EvalFile(eval) = split {
        return Err(TaskError::EvalDataNeedsDataset {
            task: spec.to_string(),
            eval: eval.clone(),
        });
    }
    let (name, difficulty) = match spec.split_once(':') {
        Some((name, given)) => {
            let difficulty = given.parse().map_err(|_| TaskError::BadDifficulty {
                task: name.to_string(),
                given: given.to_string(),
            })?;
            (name, Some(difficulty))
        }
        None => (spec, None),
    };
    builtin(name, difficulty, seed)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::problem::Split;

    fn spec(text: &str) -> Result<Box<dyn ProblemSource>, TaskError> {
        from_spec(text, 42, &VerifierRegistry::new())
    }

    #[test]
    fn builtin_names_all_build_with_defaults() {
        let expected = [
            "addition-3",
            "multiplication-2",
            "countdown-3",
            "sorting-4",
            "guess-4",
        ];
        assert_eq!(builtin_names().len(), expected.len());
        for (name, source_name) in builtin_names().iter().zip(expected) {
            assert_eq!(spec(name).unwrap().name(), source_name);
        }
    }

    #[test]
    fn difficulty_after_colon() {
        let source = spec("addition:5").unwrap();
        assert_eq!(source.name(), "addition-5");
        assert_eq!(
            source.problem(Split::Train, 0).prompt.len(),
            12,
            "5+5 digits, + and ="
        );
        assert_eq!(spec(" sorting:2 ").unwrap().name(), "sorting-2");
        assert_eq!(source.verifier().name(), "numeric");
        assert_eq!(spec("countdown:2").unwrap().verifier().name(), "countdown");
        assert_eq!(spec("sorting:2").unwrap().verifier().name(), "sorting");
    }

    #[test]
    fn seed_reaches_the_task() {
        let a = from_spec("addition", 1, &VerifierRegistry::new()).unwrap();
        let b = from_spec("addition", 2, &VerifierRegistry::new()).unwrap();
        let prompts = |s: &dyn ProblemSource| {
            (0..20)
                .map(|i| s.problem(Split::Train, i).prompt)
                .collect::<Vec<_>>()
        };
        assert_ne!(prompts(a.as_ref()), prompts(b.as_ref()));
    }

    #[test]
    fn unknown_task_says_what_exists() {
        let message = spec("foo").err().unwrap().to_string();
        assert_eq!(
            message,
            "unknown task 'foo': built-in tasks are addition, multiplication, countdown, \
             sorting, or give a .jsonl path"
        );
        assert!(matches!(spec("foo:3"), Err(TaskError::UnknownTask { .. })));
        assert!(matches!(spec(""), Err(TaskError::UnknownTask { .. })));
    }

    #[test]
    fn bad_difficulties_are_errors() {
        let err = spec("addition:x").err().unwrap();
        assert!(matches!(err, TaskError::BadDifficulty { .. }), "{err:?}");
        assert!(err.to_string().contains("'addition:3'"), "{err}");
        assert!(matches!(
            spec("addition:"),
            Err(TaskError::BadDifficulty { .. })
        ));
        assert!(matches!(
            spec("addition:-1"),
            Err(TaskError::BadDifficulty { .. })
        ));
        let err = spec("addition:0").err().unwrap();
        assert_eq!(
            err.to_string(),
            "difficulty 0 is out of range for task 'addition': use 1..=18"
        );
        assert!(matches!(
            spec("multiplication:10"),
            Err(TaskError::DifficultyOutOfRange { max: 9, .. })
        ));
        assert!(matches!(
            builtin("countdown", Some(9), 0),
            Err(TaskError::DifficultyOutOfRange { .. })
        ));
    }

    #[test]
    fn jsonl_paths_load_datasets_with_the_named_verifier() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capitals.jsonl");
        let mut file = std::fs::File::create(&path).unwrap();
        writeln!(file, "{{\"prompt\": \"France:\", \"answer\": \"Paris\"}}").unwrap();
        let path = path.to_str().unwrap();

        let default = spec(path).unwrap();
        assert_eq!(default.name(), "capitals");
        assert_eq!(default.verifier().name(), "numeric");
        assert_eq!(default.len(Split::Train), Some(1), "one prompt: it trains");
        assert_eq!(default.len(Split::Eval), Some(0));

        let exact = spec(&format!("{path}@exact")).unwrap();
        assert_eq!(exact.verifier().name(), "exact");
        assert_eq!(exact.verifier().score("Paris", "Paris"), 1.0);

        let err = spec(&format!("{path}@fuzzy")).err().unwrap();
        assert!(matches!(err, TaskError::UnknownVerifier { .. }), "{err:?}");
        let err = spec(&format!("{path}@")).err().unwrap();
        assert!(matches!(err, TaskError::UnknownVerifier { .. }), "{err:?}");
    }

    #[test]
    fn the_split_reaches_the_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let (train, eval) = (
            dir.path().join("train.jsonl"),
            dir.path().join("test.jsonl"),
        );
        let mut file = std::fs::File::create(&train).unwrap();
        for i in 0..40 {
            writeln!(
                file,
                "{{\"prompt\": \"{i}+1=\", \"answer\": \"{}\"}}",
                i + 1
            )
            .unwrap();
        }
        std::fs::write(&eval, "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n").unwrap();
        let registry = VerifierRegistry::new();
        let train_spec = format!("{}@exact", train.display());

        let hashed = from_spec(&train_spec, 0, &registry).unwrap();
        let held_out = hashed.len(Split::Eval).unwrap();
        assert!(held_out > 0 && held_out < 40, "{held_out}");
        assert_eq!(hashed.len(Split::Train), Some(40 - held_out));
        assert_eq!(hashed.verifier().name(), "exact");

        let with_file = from_spec_split(
            &train_spec,
            0,
            &registry,
            &DatasetSplit::EvalFile(eval.clone()),
        )
        .unwrap();
        assert_eq!(with_file.len(Split::Train), Some(40));
        assert_eq!(with_file.len(Split::Eval), Some(1));
        assert_eq!(with_file.problem(Split::Eval, 0).id, "test/0");

        let whole =
            from_spec_split(train.to_str().unwrap(), 0, &registry, &DatasetSplit::Whole).unwrap();
        assert_eq!(
            (whole.len(Split::Train), whole.len(Split::Eval)),
            (Some(40), Some(40))
        );

        let bad = from_spec_split(
            &train_spec,
            0,
            &registry,
            &DatasetSplit::Hashed { eval_fraction: 1.0 },
        );
        assert!(matches!(bad, Err(TaskError::BadEvalFraction { .. })));

        let builtin_with_file =
            from_spec_split("addition:2", 0, &registry, &DatasetSplit::EvalFile(eval))
                .err()
                .expect("an eval file needs a dataset");
        assert!(
            matches!(builtin_with_file, TaskError::EvalDataNeedsDataset { .. }),
            "{builtin_with_file:?}"
        );
        assert!(builtin_with_file.to_string().contains("test.jsonl"));
        let builtin = from_spec_split(
            "addition:2",
            0,
            &registry,
            &DatasetSplit::Hashed { eval_fraction: 0.5 },
        )
        .unwrap();
        assert_eq!(
            builtin.len(Split::Eval),
            None,
            "built-ins keep their own split"
        );
    }

    #[test]
    fn missing_dataset_is_an_io_error() {
        assert!(matches!(
            spec("/no/such/dir/data.jsonl"),
            Err(TaskError::Io { .. })
        ));
        assert!(matches!(
            spec("/no/such/dir/data.jsonl@exact"),
            Err(TaskError::Io { .. })
        ));
    }
}
