//! The append-only journal file (`oxrl coordinator --journal PATH`): opening it (reading the
//! records to replay, refusing a journal of another run, dropping a torn last line), appending
//! the records of each operation, and syncing them to disk.
//!
//! Durability: the records of an operation reach the file (one `write` of whole lines) before
//! its reply is sent, so a killed coordinator (SIGKILL, panic, OOM) loses nothing it answered.
//! `fsync` runs on the reaper's tick (every 100 ms) when something was written, so a crash of
//! the machine itself may lose the last ~100 ms of records.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tracing::{info, warn};

use crate::error::CoordinatorError;
use crate::record::{Entry, Record, FORMAT};

/// An open journal, positioned to append.
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    sync: SyncHandle,
}

/// Syncs the journal to disk without the state lock: a second handle on the same file and a
/// flag saying whether anything was written since the last sync.
#[derive(Clone)]
pub(crate) struct SyncHandle {
    path: PathBuf,
    file: Arc<File>,
    dirty: Arc<AtomicBool>,
}

/// A journal just opened: the file and the entries to replay, each with its line number.
pub(crate) struct Opened {
    pub journal: Journal,
    pub entries: Vec<(usize, Entry)>,
}

impl Journal {
    /// Opens (or creates) the journal at `path` for a run of `task` with `seed` over a train
    /// pool of `train_size` problems (None: unbounded).
    pub(crate) fn open(
        path: &Path,
        task: &str,
        seed: u64,
        train_size: Option<u64>,
    ) -> Result<Opened, CoordinatorError> {
        let io = |source| CoordinatorError::JournalIo {
            path: path.to_path_buf(),
            source,
        };
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
        let mut entries = entries.into_iter();
        match entries.next() {
            None => {
                let header = Entry {
                    t: crate::state::wall_ms_now(),
                    record: Record::Header {
                        format: FORMAT,
                        task: task.to_string(),
                        seed,
                        train_size,
                    },
                };
                file.write_all(&lines(std::slice::from_ref(&header)))
                    .and_then(|()| file.sync_all())
                    .map_err(io)?;
                sync_parent(path);
                info!(journal = %path.display(), "new journal");
            }
            Some((line, entry)) => check_header(path, line, &entry.record, task, seed, train_size)?,
        }
        let sync = SyncHandle {
            path: path.to_path_buf(),
            file: Arc::new(file.try_clone().map_err(io)?),
            dirty: Arc::new(AtomicBool::new(false)),
        };
        Ok(Opened {
            journal: Journal {
                path: path.to_path_buf(),
                file,
                sync,
            },
            entries: entries.collect(),
        })
    }

    /// Appends `entries` as whole lines in one write.
    pub(crate) fn append(&mut self, entries: &[Entry]) -> Result<(), CoordinatorError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&lines(entries))
            .map_err(|source| CoordinatorError::JournalIo {
                path: self.path.clone(),
                source,
            })?;
        self.sync.dirty.store(true, Ordering::Release);
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
        self.file.sync_data().map_err(|source| {
            // Try again on the next tick.
            self.dirty.store(true, Ordering::Release);
            CoordinatorError::JournalIo {
                path: self.path.clone(),
                source,
            }
        })
    }
}

/// Serialises `entries` as JSON lines.
fn lines(entries: &[Entry]) -> Vec<u8> {
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

fn check_header(
    path: &Path,
    line: usize,
    record: &Record,
    task: &str,
    seed: u64,
    train_size: Option<u64>,
) -> Result<(), CoordinatorError> {
    let error = |reason: String| CoordinatorError::Journal {
        path: path.to_path_buf(),
        line,
        reason,
    };
    match record {
        Record::Header {
            format,
            task: journal_task,
            seed: journal_seed,
            train_size: journal_train_size,
        } => {
            if *format != FORMAT {
                return Err(error(format!(
                    "journal format {format}; this coordinator reads format {FORMAT}"
                )));
            }
            if journal_task != task || *journal_seed != seed {
                return Err(error(format!(
                    "the journal belongs to a run of task {journal_task:?} with seed \
                     {journal_seed}, this coordinator runs task {task:?} with seed {seed}: give \
                     a new --journal path for a new run"
                )));
            }
            // Journals written before the pool's size was recorded carry none.
            if journal_train_size.is_some() && *journal_train_size != train_size {
                let size = |n: &Option<u64>| n.map_or("unbounded".to_string(), |n| n.to_string());
                return Err(error(format!(
                    "the journal belongs to a run over a train pool of {} problems, this \
                     coordinator's pool has {} (train_size): give a new --journal path for a new \
                     run, or the run's train_size",
                    size(journal_train_size),
                    size(&train_size)
                )));
            }
            Ok(())
        }
        _ => Err(error(
            "the first record is not a header: is this an oxrl coordinator journal?".to_string(),
        )),
    }
}

/// Makes a new file's directory entry durable (best effort: not every filesystem allows it).
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expire(t: u64, lease: &str) -> Entry {
        Entry {
            t,
            record: Record::Expire {
                lease: lease.to_string(),
            },
        }
    }

    #[test]
    fn a_new_journal_gets_a_header_and_appends_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.journal");
        let mut opened = Journal::open(&path, "addition:2", 3, None).unwrap();
        assert!(opened.entries.is_empty());
        opened
            .journal
            .append(&[expire(1, "lease-1"), expire(2, "lease-2")])
            .unwrap();
        opened.journal.sync_handle().sync().unwrap();
        drop(opened);
        let again = Journal::open(&path, "addition:2", 3, None).unwrap();
        let got: Vec<_> = again.entries.iter().map(|(n, e)| (*n, e.clone())).collect();
        assert_eq!(got, [(2, expire(1, "lease-1")), (3, expire(2, "lease-2"))]);
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_the_file_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.journal");
        let mut opened = Journal::open(&path, "t", 0, None).unwrap();
        opened.journal.append(&[expire(1, "lease-1")]).unwrap();
        drop(opened);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(r#"{"t":2,"kind":"exp"#);
        std::fs::write(&path, &text).unwrap();

        let mut opened = Journal::open(&path, "t", 0, None).unwrap();
        assert_eq!(opened.entries.len(), 1);
        // Appending after the repair starts on a fresh line.
        opened.journal.append(&[expire(3, "lease-2")]).unwrap();
        drop(opened);
        let again = Journal::open(&path, "t", 0, None).unwrap();
        assert_eq!(again.entries.len(), 2);
        assert_eq!(again.entries[1].1, expire(3, "lease-2"));
    }

    #[test]
    fn a_malformed_complete_line_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.journal");
        drop(Journal::open(&path, "t", 0, None).unwrap());
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"t\":1,\"kind\":\"expire\",\"lease\":\"lease-1\"}\nnot json\n{}\n");
        std::fs::write(&path, &text).unwrap();
        let err = Journal::open(&path, "t", 0, None).err().unwrap();
        let message = err.to_string();
        assert!(message.contains("line 3"), "{message}");
        assert!(message.contains("c.journal"), "{message}");
    }

    #[test]
    fn a_journal_of_another_run_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.journal");
        drop(Journal::open(&path, "addition:2", 0, None).unwrap());
        let err = Journal::open(&path, "countdown", 0, None).err().unwrap();
        assert!(err.to_string().contains("new --journal path"), "{err}");
        let err = Journal::open(&path, "addition:2", 1, None).err().unwrap();
        assert!(err.to_string().contains("seed 0"), "{err}");

        let sized = dir.path().join("sized.journal");
        drop(Journal::open(&sized, "addition:2", 0, Some(8)).unwrap());
        assert!(Journal::open(&sized, "addition:2", 0, Some(8)).is_ok());
        let err = Journal::open(&sized, "addition:2", 0, Some(16))
            .err()
            .unwrap();
        assert!(err.to_string().contains("pool of 8 problems"), "{err}");

        let other = dir.path().join("other.journal");
        std::fs::write(
            &other,
            "{\"t\":1,\"kind\":\"expire\",\"lease\":\"lease-1\"}\n",
        )
        .unwrap();
        let err = Journal::open(&other, "t", 0, None).err().unwrap();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(err.to_string().contains("not a header"), "{err}");
    }
}
