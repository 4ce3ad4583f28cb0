//! Progress bars for long commands; indicatif hides them when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` steps showing `{msg}` with the figures that matter.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{what} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {{msg}}"
        ))
        .expect("valid template"),
    );
    pb
}

/// A spinner for work of unknown length: `{msg}` says which measurement or phase runs.
pub fn spinner(what: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template(&format!("{what} {{spinner}} [{{elapsed_precise}}] {{msg}}"))
            .expect("valid template"),
    );
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    pb
}
