//! The append-only journal file (`oxrl coordinator --journal PATH`): opening it (reading the
//! records to replay, refusing a journal of another run, dropping a torn last line), appending
//! the records of each operation, syncing them to disk, and compacting it.
//!
//! Durability: the records of an operation reach the file (one `write` of whole lines) before
//! its reply is sent, so a killed coordinator (SIGKILL, panic, OOM) loses nothing it answered.
//! `fsync` runs on the reaper's tick (every 100 ms) when something was written, so a crash of
//! the machine itself may lose the last ~100 ms of records.
//!
//! Compaction (every `compact_every` records): the state is written to `PATH.snapshot`
//! (`snapshot.rs`: temp file, fsync, rename, fsync the directory), then the journal is
//! replaced, the same way, by a fresh tail whose header carries the snapshot's generation.
//! The snapshot says how many lines of the journal before it covers, so a crash between the
//! two renames is recovered on open: the old journal's lines after those are the tail (the
//! switch is then finished). A crash before the first rename leaves the old snapshot and
//! journal as they were.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tracing::{info, warn};

use crate::error::CoordinatorError;
use crate::record::{Entry, Record, FORMAT};
use crate::snapshot::{self, Snapshot};
use crate::state::StateImage;

/// Records between compactions when none is configured: a restart replays at most this many
/// after the snapshot (about 1 s; BENCHMARKS.md), and a snapshot (a few MB on an endless task)
/// is written per ~10 MB of tail.
pub const DEFAULT_COMPACT_EVERY: u64 = 20_000;

/// The journal's file and how often it is compacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalOptions {
    /// The journal; its snapshot is `PATH.snapshot`.
    pub path: PathBuf,
    /// Compact once the tail holds this many records (0: never).
    pub compact_every: u64,
}

impl JournalOptions {
    /// The journal at `path`, compacted every [`DEFAULT_COMPACT_EVERY`] records.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            compact_every: DEFAULT_COMPACT_EVERY,
        }
    }
}

/// The run a journal belongs to, as its header (and its snapshot) say.
#[derive(Debug, Clone)]
pub(crate) struct RunId {
    pub task: String,
    pub seed: u64,
    pub train_size: Option<u64>,
}

/// An open journal, positioned to append.
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    sync: SyncHandle,
    run: RunId,
    /// The header's generation: compactions before this tail began.
    generation: u64,
    /// Lines in the file, header included.
    lines: usize,
    /// Records in the tail (after the header).
    tail_records: u64,
    /// The latest record's time, wall ms (the snapshot's or 0 when there is none).
    last_t: u64,
    compact_every: u64,
}

/// Syncs the journal to disk without the state lock: a second handle on the current file
/// (replaced when a compaction starts a new tail) and a flag saying whether anything was
/// written since the last sync.
#[derive(Clone)]
pub(crate) struct SyncHandle {
    path: PathBuf,
    file: Arc<Mutex<Arc<File>>>,
    dirty: Arc<AtomicBool>,
}

/// A journal just opened: the snapshot to restore first, if any, and the entries to replay
/// after it, each with its line number.
pub(crate) struct Opened {
    pub journal: Journal,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<(usize, Entry)>,
}

/// How far a compaction goes: all the way, or (tests) stopped after a step as a crash would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum CompactStep {
    SnapshotWritten,
    SnapshotRenamed,
    TailWritten,
    TailSwitched,
}

/// An empty journal file: refused when a snapshot expects its tail, else given its header
/// (generation 0) and synced.
fn start_new(
    path: &Path,
    snapshot_path: &Path,
    has_snapshot: bool,
    run: &RunId,
    file: &mut File,
) -> Result<(), CoordinatorError> {
    if has_snapshot {
        return Err(CoordinatorError::Snapshot {
            path: snapshot_path.to_path_buf(),
            reason: format!(
                "the snapshot has no journal: {} is missing or empty, so the records \
                 after the snapshot are lost; give a new --journal path for a new run",
                path.display()
            ),
        });
    }
    let header = header_entry(run, 0);
    file.write_all(&lines_of(std::slice::from_ref(&header)))
        .and_then(|()| file.sync_all())
        .map_err(|source| CoordinatorError::JournalIo {
            path: path.to_path_buf(),
            source,
        })?;
    snapshot::sync_parent(path);
    info!(journal = %path.display(), "new journal");
    Ok(())
}

impl Journal {
    /// Opens (or creates) the journal at `path` for `run`, with its snapshot if it has one.
    pub(crate) fn open(
        path: &Path,
        run: RunId,
        compact_every: u64,
    ) -> Result<Opened, CoordinatorError> {
        let io = |source| CoordinatorError::JournalIo {
            path: path.to_path_buf(),
            source,
        };
        let snapshot_path = snapshot::path_for(path);
        let snapshot = open_snapshot(path, &snapshot_path, &run)?;
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        let (entries, complete_len) = parse(path, &bytes)?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if complete_len < bytes.len() {
            warn!(
                journal = %path.display(),
                bytes = bytes.len() - complete_len,
                "the journal's last line is incomplete (the coordinator died writing it): dropped"
            );
            file.set_len(complete_len as u64).map_err(io)?;
        }
        let mut lines = bytes[..complete_len]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        let mut entries = entries.into_iter();
        let generation = match entries.next() {
            Some((line, entry)) => check_header(path, line, &entry.record, &run)?,
            None => {
                start_new(path, &snapshot_path, snapshot.is_some(), &run, &mut file)?;
                lines = 1;
                0
            }
        };
        let mut entries: Vec<(usize, Entry)> = entries.collect();
        let switch = tail_fits(path, &snapshot_path, snapshot.as_ref(), generation)?;
        if let Some(covers) = switch {
            entries.retain(|(line, _)| *line > covers);
        }
        let last_t = entries
            .iter()
            .map(|(_, e)| e.t)
            .chain(snapshot.as_ref().map(|s| s.t))
            .max()
            .unwrap_or(0);
        let sync = SyncHandle {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(Arc::new(file.try_clone().map_err(io)?))),
            dirty: Arc::new(AtomicBool::new(false)),
        };
        let mut journal = Journal {
            path: path.to_path_buf(),
            file,
            sync,
            run,
            generation,
            lines,
            tail_records: entries.len() as u64,
            last_t,
            compact_every,
        };
        if let (Some(s), Some(_)) = (&snapshot, switch) {
            // A compaction died between its two renames: finish it.
            warn!(journal = %path.display(), "finishing a compaction cut short: the tail after the snapshot becomes the journal");
            let records: Vec<Entry> = entries.iter().map(|(_, e)| e.clone()).collect();
            let tmp = journal.write_tail_tmp(s.generation, &records)?;
            journal.switch_tail(&tmp, s.generation, &records)?;
            entries = records
                .into_iter()
                .enumerate()
                .map(|(i, e)| (i + 2, e))
                .collect();
        }
        Ok(Opened {
            journal,
            snapshot,
            entries,
        })
    }

    /// Appends `entries` as whole lines in one write.
    pub(crate) fn append(&mut self, entries: &[Entry]) -> Result<(), CoordinatorError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&lines_of(entries))
            .map_err(|source| CoordinatorError::JournalIo {
                path: self.path.clone(),
                source,
            })?;
        self.sync.dirty.store(true, Ordering::Release);
        self.lines += entries.len();
        self.tail_records += entries.len() as u64;
        self.last_t = entries.iter().map(|e| e.t).fold(self.last_t, u64::max);
        Ok(())
    }

    /// Records in the tail (all of them when it was never compacted).
    pub(crate) fn tail_records(&self) -> u64 {
        self.tail_records
    }

    /// Whether the tail has grown to the compaction threshold.
    pub(crate) fn compaction_due(&self) -> bool {
        self.compact_every > 0 && self.tail_records >= self.compact_every
    }

    /// Compacts: `image` (the state after every record in the journal) becomes the snapshot
    /// and an empty tail the journal.
    pub(crate) fn compact(&mut self, image: StateImage) -> Result<(), CoordinatorError> {
        let compacted = self.compact_through(image, CompactStep::TailSwitched);
        release_freed_memory();
        compacted
    }

    /// [`compact`](Self::compact), stopped after `last` (a test's crash point).
    pub(crate) fn compact_through(
        &mut self,
        image: StateImage,
        last: CompactStep,
    ) -> Result<(), CoordinatorError> {
        let snapshot_path = snapshot::path_for(&self.path);
        let io = |source| CoordinatorError::JournalIo {
            path: snapshot_path.clone(),
            source,
        };
        let generation = self.generation + 1;
        let snap = Snapshot {
            format: FORMAT,
            task: self.run.task.clone(),
            seed: self.run.seed,
            train_size: self.run.train_size,
            generation,
            covers: self.lines,
            t: self.last_t,
            state: image,
        };
        let tmp = snapshot::write_tmp(&snapshot_path, &snap).map_err(io)?;
        if last == CompactStep::SnapshotWritten {
            return Ok(());
        }
        snapshot::publish(&tmp, &snapshot_path).map_err(io)?;
        if last == CompactStep::SnapshotRenamed {
            return Ok(());
        }
        let tail = self.write_tail_tmp(generation, &[])?;
        if last == CompactStep::TailWritten {
            return Ok(());
        }
        self.switch_tail(&tail, generation, &[])?;
        info!(
            journal = %self.path.display(),
            generation,
            covers = snap.covers,
            "compacted the journal: snapshot written, fresh tail started"
        );
        Ok(())
    }

    /// Writes a tail of `generation` holding `records` to the temporary tail file, synced.
    fn write_tail_tmp(
        &self,
        generation: u64,
        records: &[Entry],
    ) -> Result<PathBuf, CoordinatorError> {
        let tmp = tail_tmp(&self.path);
        let mut bytes = lines_of(&[header_entry(&self.run, generation)]);
        bytes.extend(lines_of(records));
        snapshot::write_synced(&tmp, &bytes).map_err(|source| CoordinatorError::JournalIo {
            path: tmp.clone(),
            source,
        })?;
        Ok(tmp)
    }

    /// Renames the tail `tmp` (of `generation`, holding `records`) over the journal and
    /// appends to it from now on.
    fn switch_tail(
        &mut self,
        tmp: &Path,
        generation: u64,
        records: &[Entry],
    ) -> Result<(), CoordinatorError> {
        let io = |source| CoordinatorError::JournalIo {
            path: self.path.clone(),
            source,
        };
        snapshot::publish(tmp, &self.path).map_err(io)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        let handle = Arc::new(file.try_clone().map_err(io)?);
        *self
            .sync
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = handle;
        self.file = file;
        self.generation = generation;
        self.lines = 1 + records.len();
        self.tail_records = records.len() as u64;
        Ok(())
    }

    /// The handle that syncs this journal to disk.
    pub(crate) fn sync_handle(&self) -> SyncHandle {
        self.sync.clone()
    }
}

impl SyncHandle {
    /// `fsync`s the journal if anything was written since the last sync.
    pub(crate) fn sync(&self) -> Result<(), CoordinatorError> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let file = self
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        file.sync_data().map_err(|source| {
            // Try again on the next tick.
            self.dirty.store(true, Ordering::Release);
            CoordinatorError::JournalIo {
                path: self.path.clone(),
                source,
            }
        })
    }
}

/// The snapshot beside the journal at `path`, if any, checked to be of `run`; first removes
/// the temporary files of a compaction that did not finish (never renamed, never used).
fn open_snapshot(
    path: &Path,
    snapshot_path: &Path,
    run: &RunId,
) -> Result<Option<Snapshot>, CoordinatorError> {
    for tmp in [snapshot::with_suffix(snapshot_path, ".tmp"), tail_tmp(path)] {
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(CoordinatorError::JournalIo {
                    path: tmp,
                    source: e,
                })
            }
            _ => {}
        }
    }
    let snapshot = snapshot::read(snapshot_path)?;
    if let Some(s) = &snapshot {
        check_run(s.format, &s.task, s.seed, s.train_size, run, "snapshot").map_err(|reason| {
            CoordinatorError::Snapshot {
                path: snapshot_path.to_path_buf(),
                reason,
            }
        })?;
    }
    Ok(snapshot)
}

/// Where a new tail is written before it replaces the journal.
fn tail_tmp(path: &Path) -> PathBuf {
    snapshot::with_suffix(path, ".tmp")
}

/// A header for `run` at `generation`, stamped now.
fn header_entry(run: &RunId, generation: u64) -> Entry {
    Entry {
        t: crate::state::wall_ms_now(),
        record: Record::Header {
            format: FORMAT,
            task: run.task.clone(),
            seed: run.seed,
            train_size: run.train_size,
            generation,
        },
    }
}

/// Whether the journal of `generation` is the tail of `snapshot`: Ok(None) when it is (or
/// there is no snapshot and it is the whole run), Ok(Some(covers)) when it is the journal the
/// snapshot was taken from (a compaction stopped before switching the tail: its lines after
/// `covers` are the tail), an error when the two do not belong together.
fn tail_fits(
    path: &Path,
    snapshot_path: &Path,
    snapshot: Option<&Snapshot>,
    generation: u64,
) -> Result<Option<usize>, CoordinatorError> {
    match snapshot {
        None if generation == 0 => Ok(None),
        None => Err(CoordinatorError::Journal {
            path: path.to_path_buf(),
            line: 1,
            reason: format!(
                "the journal is the tail after compaction {generation}, but its snapshot {} is \
                 missing: restore the snapshot, or give a new --journal path for a new run",
                snapshot_path.display()
            ),
        }),
        Some(s) if s.generation == generation => Ok(None),
        Some(s) if s.generation == generation + 1 => Ok(Some(s.covers)),
        Some(s) => Err(CoordinatorError::Snapshot {
            path: snapshot_path.to_path_buf(),
            reason: format!(
                "the snapshot is of compaction {}, the journal {} the tail after compaction \
                 {generation}: they are not of one run's history",
                s.generation,
                path.display()
            ),
        }),
    }
}

/// Serialises `entries` as JSON lines.
fn lines_of(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        serde_json::to_writer(&mut out, entry).expect("journal records serialise");
        out.push(b'\n');
    }
    out
}

/// The complete lines of `bytes` parsed (blank lines skipped), and the length of the part
/// that ends in a newline: bytes after the last newline are a torn write.
fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<(usize, Entry)>, usize), CoordinatorError> {
    let complete_len = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |last| last + 1);
    let mut entries = Vec::new();
    for (i, line) in bytes[..complete_len].split(|&b| b == b'\n').enumerate() {
        let number = i + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let entry =
            serde_json::from_slice::<Entry>(line).map_err(|e| CoordinatorError::Journal {
                path: path.to_path_buf(),
                line: number,
                reason: format!("not a journal record ({e})"),
            })?;
        entries.push((number, entry));
    }
    Ok((entries, complete_len))
}

/// The generation of a journal whose first record is `record`, if that is a header of `run`.
fn check_header(
    path: &Path,
    line: usize,
    record: &Record,
    run: &RunId,
) -> Result<u64, CoordinatorError> {
    let error = |reason: String| CoordinatorError::Journal {
        path: path.to_path_buf(),
        line,
        reason,
    };
    match record {
        Record::Header {
            format,
            task,
            seed,
            train_size,
            generation,
        } => {
            check_run(*format, task, *seed, *train_size, run, "journal").map_err(error)?;
            Ok(*generation)
        }
        _ => Err(error(
            "the first record is not a header: is this an oxrl coordinator journal?".to_string(),
        )),
    }
}

/// Whether a `what` (journal or snapshot) of `format` written for `task`, `seed` and
/// `train_size` belongs to `run`; if not, why.
fn check_run(
    format: u32,
    task: &str,
    seed: u64,
    train_size: Option<u64>,
    run: &RunId,
    what: &str,
) -> Result<(), String> {
    if format != FORMAT {
        return Err(format!(
            "{what} format {format}; this coordinator reads format {FORMAT}"
        ));
    }
    if task != run.task || seed != run.seed {
        return Err(format!(
            "the {what} belongs to a run of task {task:?} with seed {seed}, this coordinator \
             runs task {:?} with seed {}: give a new --journal path for a new run",
            run.task, run.seed
        ));
    }
    // Journals written before the pool's size was recorded carry none.
    if train_size.is_some() && train_size != run.train_size {
        let size = |n: &Option<u64>| n.map_or("unbounded".to_string(), |n| n.to_string());
        return Err(format!(
            "the {what} belongs to a run over a train pool of {} problems, this coordinator's \
             pool has {} (train_size): give a new --journal path for a new run, or the run's \
             train_size",
            size(&train_size),
            size(&run.train_size)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// Hands the memory a compaction freed (the state's image, a copy of every lease, prompt and
/// pass-rate window) back to the kernel. Without it the allocator keeps those pages, in
/// whichever arena the compacting thread used, and the coordinator's resident memory climbs
/// by steps with the first compactions (BENCHMARKS.md, "Soak").
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel; it takes the allocator's
    // own locks and touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
