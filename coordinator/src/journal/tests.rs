//! The journal file: a new one's header, appends read back, torn and malformed lines, and
//! another run's journal refused.

use super::*;

fn open(
    path: &Path,
    task: &str,
    seed: u64,
    train_size: Option<u64>,
) -> Result<Opened, CoordinatorError> {
    let run = RunId {
        task: task.to_string(),
        seed,
        train_size,
    };
    Journal::open(path, run, 0)
}

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
    let mut opened = open(&path, "addition:2", 3, None).unwrap();
    assert!(opened.entries.is_empty());
    opened
        .journal
        .append(&[expire(1, "lease-1"), expire(2, "lease-2")])
        .unwrap();
    opened.journal.sync_handle().sync().unwrap();
    drop(opened);
    let again = open(&path, "addition:2", 3, None).unwrap();
    let got: Vec<_> = again.entries.iter().map(|(n, e)| (*n, e.clone())).collect();
    assert_eq!(got, [(2, expire(1, "lease-1")), (3, expire(2, "lease-2"))]);
}

#[test]
fn a_torn_last_line_is_dropped_and_the_file_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.journal");
    let mut opened = open(&path, "t", 0, None).unwrap();
    opened.journal.append(&[expire(1, "lease-1")]).unwrap();
    drop(opened);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(r#"{"t":2,"kind":"exp"#);
    std::fs::write(&path, &text).unwrap();

    let mut opened = open(&path, "t", 0, None).unwrap();
    assert_eq!(opened.entries.len(), 1);
    // Appending after the repair starts on a fresh line.
    opened.journal.append(&[expire(3, "lease-2")]).unwrap();
    drop(opened);
    let again = open(&path, "t", 0, None).unwrap();
    assert_eq!(again.entries.len(), 2);
    assert_eq!(again.entries[1].1, expire(3, "lease-2"));
}

#[test]
fn a_malformed_complete_line_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.journal");
    drop(open(&path, "t", 0, None).unwrap());
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"t\":1,\"kind\":\"expire\",\"lease\":\"lease-1\"}\nnot json\n{}\n");
    std::fs::write(&path, &text).unwrap();
    let err = open(&path, "t", 0, None).err().unwrap();
    let message = err.to_string();
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("c.journal"), "{message}");
}

#[test]
fn a_journal_of_another_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.journal");
    drop(open(&path, "addition:2", 0, None).unwrap());
    let err = open(&path, "countdown", 0, None).err().unwrap();
    assert!(err.to_string().contains("new --journal path"), "{err}");
    let err = open(&path, "addition:2", 1, None).err().unwrap();
    assert!(err.to_string().contains("seed 0"), "{err}");

    let sized = dir.path().join("sized.journal");
    drop(open(&sized, "addition:2", 0, Some(8)).unwrap());
    assert!(open(&sized, "addition:2", 0, Some(8)).is_ok());
    let err = open(&sized, "addition:2", 0, Some(16)).err().unwrap();
    assert!(err.to_string().contains("pool of 8 problems"), "{err}");

    let other = dir.path().join("other.journal");
    std::fs::write(
        &other,
        "{\"t\":1,\"kind\":\"expire\",\"lease\":\"lease-1\"}\n",
    )
    .unwrap();
    let err = open(&other, "t", 0, None).err().unwrap();
    assert!(err.to_string().contains("line 1"), "{err}");
    assert!(err.to_string().contains("not a header"), "{err}");
}
