//! The journal's snapshot, `<journal>.snapshot` next to the journal: the replayable state
//! (`state/image.rs`) as of a point in the journal, so that a restart replays the snapshot and
//! the short tail after it instead of every record since the run began. `journal.rs` decides
//! when to write one and switches the tail; this module is the file: one JSON object, written
//! to a temporary file, synced, and renamed into place (then the directory synced), so the
//! snapshot on disk is always a whole one.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::CoordinatorError;
use crate::state::StateImage;

/// A snapshot: the run it belongs to (as a journal's header says), where it stands in the
/// journal, and the state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub format: u32,
    pub task: String,
    pub seed: u64,
    #[serde(default)]
    pub train_size: Option<u64>,
    /// The generation of the tail that follows it: the journal whose header carries this
    /// generation holds the records after the snapshot.
    pub generation: u64,
    /// Lines of the journal of the generation before (header included) the snapshot holds:
    /// if that journal is still in place (a crash before the tail was switched), its records
    /// after this line are the tail.
    pub covers: usize,
    /// The wall-clock time (unix ms) of the last record it holds.
    pub t: u64,
    pub state: StateImage,
}

/// Where the snapshot of the journal at `journal` lives.
pub(crate) fn path_for(journal: &Path) -> PathBuf {
    with_suffix(journal, ".snapshot")
}

/// `path` with `suffix` added to its file name.
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The snapshot at `path`, None if there is none; a file that does not parse is an error
/// (never taken for a fresh run).
pub(crate) fn read(path: &Path) -> Result<Option<Snapshot>, CoordinatorError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CoordinatorError::JournalIo {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| CoordinatorError::Snapshot {
            path: path.to_path_buf(),
            reason: format!(
                "not a whole journal snapshot ({e}): it is written whole and renamed into place, \
                 so it was damaged afterwards; restore it from a backup, or remove the journal \
                 and the snapshot to start the run afresh"
            ),
        })
}

/// Writes `snapshot` to `<path>.tmp` and syncs it; returns the temporary file's path. The
/// JSON is streamed through a small buffer, never held whole in memory: a coordinator that
/// keeps its freed memory (`src/alloc.rs`) would otherwise keep a snapshot's worth of heap
/// after every compaction.
pub(crate) fn write_tmp(path: &Path, snapshot: &Snapshot) -> std::io::Result<PathBuf> {
    let tmp = with_suffix(path, ".tmp");
    let mut out = std::io::BufWriter::with_capacity(64 << 10, File::create(&tmp)?);
    serde_json::to_writer(&mut out, snapshot).map_err(std::io::Error::other)?;
    out.write_all(b"\n")?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(tmp)
}

/// Writes `bytes` to a new file at `path` (replacing one there) and syncs it.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Renames `tmp` over `path` and syncs the directory, so the rename itself is durable.
pub(crate) fn publish(tmp: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::rename(tmp, path)?;
    sync_parent(path);
    Ok(())
}

/// Makes a directory entry durable (best effort: not every filesystem allows it).
pub(crate) fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests;
