//! Tidy checks on the source tree, as rust-analyzer keeps them: every Rust file opens with a
//! `//!` module doc saying what it is for, and every path ARCHITECTURE.md names exists, so
//! the codemap cannot drift from the code without a failing test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Directories that hold no sources of ours (`third_party`: vendored crates, kept as
/// published but for the changes their OXRL.md lists).
fn skipped(name: &str) -> bool {
    name.starts_with('.') || matches!(name, "target" | "runs" | "node_modules" | "third_party")
}

/// Every file under the repository (relative, with `/`), build outputs and runs left out.
fn files() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if path.is_dir() {
                if !skipped(&name) {
                    walk(&path, out);
                }
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(repo(), &mut out);
    let mut rel: Vec<String> = out
        .iter()
        .map(|p| {
            p.strip_prefix(repo())
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect();
    rel.sort();
    rel
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let missing: Vec<String> = files()
        .into_iter()
        .filter(|f| f.ends_with(".rs"))
        .filter(|f| {
            let text = std::fs::read_to_string(repo().join(f)).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` doc saying what they are for: {missing:#?}"
    );
}

/// File endings that make a backticked word in ARCHITECTURE.md a path.
const ENDINGS: &[&str] = &[
    ".rs", ".md", ".toml", ".proto", ".html", ".json", ".sh", ".py",
];

/// The paths ARCHITECTURE.md names: backticked words with a `/` or a file ending (a single
/// `{a,b}` group expanded), and the targets of relative Markdown links.
fn named_paths(text: &str) -> BTreeSet<String> {
    let mut words: Vec<String> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    for link in text.split("](").skip(1) {
        if let Some(end) = link.find(')') {
            words.push(link[..end].to_string());
        }
    }
    let looks_like_path = |w: &str| {
        !w.is_empty()
            && !w.starts_with('/')
            && !w.contains("://")
            && !w.contains(' ')
            && !w.contains("::")
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._/-{},".contains(c))
            && (w.contains('/') || ENDINGS.iter().any(|e| w.ends_with(e)))
    };
    let mut paths = BTreeSet::new();
    for w in words.iter().filter(|w| looks_like_path(w)) {
        match (w.find('{'), w.find('}')) {
            (Some(open), Some(close)) if open < close => {
                for alt in w[open + 1..close].split(',') {
                    paths.insert(format!("{}{alt}{}", &w[..open], &w[close + 1..]));
                }
            }
            _ => {
                paths.insert(w.clone());
            }
        }
    }
    paths
}

/// A named path exists when it is a path from the root, or the tail of one (the codemap names
/// files within the crate its paragraph is about: `checkpoint.rs`, `server/intake.rs`); paths
/// under skipped directories (`third_party/...`) only from the root.
fn exists(named: &str, files: &[String], dirs: &BTreeSet<String>) -> bool {
    let named = named.trim_end_matches('/');
    let tail = format!("/{named}");
    repo().join(named).exists()
        || files
            .iter()
            .chain(dirs.iter())
            .any(|f| f == named || f.ends_with(&tail))
}

#[test]
fn every_path_architecture_md_names_exists() {
    let files = files();
    let dirs: BTreeSet<String> = files
        .iter()
        .flat_map(|f| {
            let parts: Vec<&str> = f.split('/').collect();
            (1..parts.len())
                .map(|n| parts[..n].join("/"))
                .collect::<Vec<_>>()
        })
        .collect();
    let text = std::fs::read_to_string(repo().join("ARCHITECTURE.md")).unwrap();
    let named = named_paths(&text);
    assert!(
        named.len() > 40,
        "the path reader found only {} paths in ARCHITECTURE.md: {named:?}",
        named.len()
    );
    let missing: Vec<&String> = named.iter().filter(|n| !exists(n, &files, &dirs)).collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist (update the codemap): {missing:#?}"
    );
}

#[test]
fn the_path_reader_finds_paths_and_leaves_other_words() {
    let named = named_paths(
        "`policy/` has `checkpoint.rs`; see [the doc](docs/gpus.md), `overlays/{cpu,gpu}`, \
         not `oxrl.v1`, `--listen ADDR`, `/metrics`, `Learner::step` or `min(rho, eps)`.",
    );
    let want: BTreeSet<String> = [
        "policy/",
        "checkpoint.rs",
        "docs/gpus.md",
        "overlays/cpu",
        "overlays/gpu",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(named, want);
    let files = vec!["policy/src/checkpoint.rs".to_string()];
    let dirs: BTreeSet<String> = ["policy".to_string(), "policy/src".to_string()].into();
    assert!(exists("checkpoint.rs", &files, &dirs));
    assert!(exists("policy/", &files, &dirs));
    assert!(exists("src/checkpoint.rs", &files, &dirs));
    assert!(!exists("point.rs", &files, &dirs));
    assert!(!exists("stepper.rs", &files, &dirs));
}
