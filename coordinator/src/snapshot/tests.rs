//! Compaction rebuilds the state a replay of the whole journal rebuilds: a restored image
//! followed by the tail, at any cut, and after a crash at every step of a compaction. A
//! snapshot of another run, a damaged one, or a tail without its snapshot is a clear error.

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::CoordinatorError;
use crate::handle::Coordinator;
use crate::journal::{CompactStep, Journal, JournalOptions, RunId};
use crate::pool::tests::FixedSource;
use crate::record::Entry;
use crate::state::replay_tests::{fresh_for, random_run, run_for, Live};
use crate::state::{Resume, State};

/// A random run over `len` problems (None: an endless task) and its records.
fn live_run(len: Option<u64>, seed: u64) -> Live {
    let mut live = Live::new(len);
    random_run(&mut live, seed, Instant::now());
    live
}

/// The state a replay of `records` from the start rebuilds.
fn replayed(len: Option<u64>, records: &[(usize, Entry)], now: Instant) -> State {
    let mut state = fresh_for(len, 0);
    state.replay(records.to_vec(), now).expect("replays");
    state
}

fn run_id(len: Option<u64>, seed: u64) -> RunId {
    RunId {
        task: "fixed".to_string(),
        seed,
        train_size: len,
    }
}

/// The state a coordinator opening the journal at `path` rebuilds.
fn reopened(path: &Path, len: Option<u64>) -> Result<String, CoordinatorError> {
    let options = JournalOptions {
        path: path.to_path_buf(),
        compact_every: 0,
    };
    let coordinator = Coordinator::open(run_for(0), Some(options), Box::new(FixedSource { len }))?;
    coordinator.with_state(|s| s.describe())
}

/// Appends `entries` to the journal at `path` (opened as a restarted coordinator would).
fn append(path: &Path, len: Option<u64>, entries: &[(usize, Entry)]) {
    let mut opened = Journal::open(path, run_id(len, 0), 0).unwrap();
    let records: Vec<Entry> = entries.iter().map(|(_, e)| e.clone()).collect();
    opened.journal.append(&records).unwrap();
}

#[test]
fn an_image_then_the_tail_is_the_whole_replay_at_any_cut() {
    for (len, seed) in [(None, 1), (Some(7), 2), (Some(3), 3), (None, 4)] {
        let live = live_run(len, seed);
        let records = &live.records;
        let now = Instant::now() + Duration::from_secs(3600);
        let whole = replayed(len, records, now).describe();
        assert_eq!(whole, live.state.describe(), "seed {seed}");
        let n = records.len();
        for cut in [0, 1, n / 3, n / 2, n - 1, n] {
            let (before, after) = records.split_at(cut);
            let image = replayed(len, before, now).image();
            // Through its file format, as a restart reads it.
            let image = serde_json::from_str(&serde_json::to_string(&image).unwrap()).unwrap();
            let last_t = before.last().map_or(0, |(_, e)| e.t);
            let mut state = fresh_for(len, 0);
            let resume = state.restore(image, last_t, now).unwrap();
            state.replay_from(resume, after.to_vec(), now).unwrap();
            assert_eq!(state.describe(), whole, "seed {seed} cut {cut} of {n}");
        }
    }
}

#[test]
fn a_restored_image_answers_the_next_requests_as_the_live_state() {
    use crate::domain::{LeaseRequest, MemberRole, Registration};
    let live = live_run(None, 5);
    let now = Instant::now() + Duration::from_secs(3600);
    let mut state = fresh_for(None, 0);
    let resume = state.restore(live.state.image(), 0, now).unwrap();
    assert_eq!(
        resume.deadlines.len() as u64,
        live.state.snapshot(now).leases_outstanding
    );
    state
        .replay_from(Resume { ..resume }, Vec::new(), now)
        .unwrap();
    let mut whole = replayed(None, &live.records, now);
    let answers = [&mut whole, &mut state].map(|s| {
        let registration = Registration {
            role: MemberRole::Actor,
            advertise_addr: String::new(),
            name: "new".to_string(),
        };
        let actor = s.register(registration, now).member_id;
        let version = s.status(now).learner_version;
        let request = LeaseRequest {
            member_id: actor.clone(),
            version,
            max_prompts: 3,
        };
        let grant = s.lease(request, now).unwrap().outcome.ok();
        (actor, grant.map(|g| (g.lease_id, g.group_ids)))
    });
    assert_eq!(answers[0], answers[1]);
}

#[test]
fn a_crash_at_any_step_of_a_compaction_loses_and_repeats_nothing() {
    let steps = [
        CompactStep::SnapshotWritten,
        CompactStep::SnapshotRenamed,
        CompactStep::TailWritten,
        CompactStep::TailSwitched,
    ];
    for (len, seed) in [(None, 6), (Some(5), 7)] {
        let live = live_run(len, seed);
        let records = &live.records;
        let cut = records.len() / 2;
        let (before, after) = records.split_at(cut);
        let now = Instant::now();
        let at_cut = replayed(len, before, now).describe();
        let whole = replayed(len, records, now).describe();
        for step in steps {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.journal");
            // A first compaction done in full, so the crash is in the second (a snapshot and
            // a tail are already there).
            let (first, second) = before.split_at(cut / 2);
            append(&path, len, first);
            let mut opened = Journal::open(&path, run_id(len, 0), 0).unwrap();
            opened
                .journal
                .compact(replayed(len, first, now).image())
                .unwrap();
            opened
                .journal
                .append(&second.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>())
                .unwrap();
            // The crash: the process stops after `step`.
            let image = replayed(len, before, now).image();
            opened.journal.compact_through(image, step).unwrap();
            drop(opened);

            assert_eq!(
                reopened(&path, len).unwrap(),
                at_cut,
                "{step:?} seed {seed}"
            );
            // The run goes on after the restart, and once more after another.
            append(&path, len, after);
            assert_eq!(reopened(&path, len).unwrap(), whole, "{step:?} seed {seed}");
            assert_eq!(reopened(&path, len).unwrap(), whole, "{step:?} seed {seed}");
            let leftovers: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|name| name.ends_with(".tmp"))
                .collect();
            assert!(leftovers.is_empty(), "{step:?}: {leftovers:?}");
        }
    }
}

#[test]
fn a_coordinator_compacts_on_its_own_and_restarts_to_the_same_state() {
    let live = live_run(None, 8);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.journal");
    append(&path, None, &live.records);
    let every = (live.records.len() / 3) as u64;
    let options = JournalOptions {
        path: path.clone(),
        compact_every: every,
    };
    // Opening a journal past the threshold compacts it at once.
    let coordinator = Coordinator::open(
        run_for(0),
        Some(options),
        Box::new(FixedSource { len: None }),
    )
    .unwrap();
    let before = coordinator.with_state(|s| s.describe()).unwrap();
    drop(coordinator);
    let snapshot = crate::snapshot::read(&crate::snapshot::path_for(&path))
        .unwrap()
        .expect("a snapshot was written");
    assert_eq!(snapshot.generation, 1);
    let tail = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        tail.lines().count(),
        1,
        "a fresh tail holds its header only"
    );
    assert_eq!(reopened(&path, None).unwrap(), before);
    assert_eq!(before, live.state.describe());
}

#[test]
fn a_snapshot_of_another_run_or_damaged_or_missing_is_refused() {
    let live = live_run(None, 9);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.journal");
    append(&path, None, &live.records);
    let mut opened = Journal::open(&path, run_id(None, 0), 0).unwrap();
    opened.journal.compact(live.state.image()).unwrap();
    drop(opened);
    let snapshot_path = crate::snapshot::path_for(&path);

    // Another run's snapshot (a tail of ours renamed beside it shows the check is the
    // snapshot's own).
    let other = dir.path().join("o.journal");
    std::fs::copy(&snapshot_path, crate::snapshot::path_for(&other)).unwrap();
    std::fs::copy(&path, &other).unwrap();
    let err = Journal::open(&other, run_id(None, 1), 0).err().unwrap();
    assert!(matches!(err, CoordinatorError::Snapshot { .. }), "{err}");
    assert!(err.to_string().contains("seed 0"), "{err}");
    let mut other_task = run_id(None, 0);
    other_task.task = "countdown".to_string();
    let err = Journal::open(&other, other_task, 0).err().unwrap();
    assert!(matches!(err, CoordinatorError::Snapshot { .. }), "{err}");
    assert!(err.to_string().contains("new --journal path"), "{err}");

    // A damaged snapshot: an error naming it, and nothing rewritten.
    let whole = std::fs::read(&snapshot_path).unwrap();
    std::fs::write(&snapshot_path, &whole[..whole.len() / 2]).unwrap();
    let tail = std::fs::read(&path).unwrap();
    let err = reopened(&path, None).unwrap_err();
    assert!(matches!(err, CoordinatorError::Snapshot { .. }), "{err}");
    assert!(err.to_string().contains("c.journal.snapshot"), "{err}");
    assert!(
        err.to_string().contains("not a whole journal snapshot"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        tail,
        "the journal is untouched"
    );

    // The tail without its snapshot.
    std::fs::remove_file(&snapshot_path).unwrap();
    let err = reopened(&path, None).unwrap_err();
    assert!(err.to_string().contains("snapshot"), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
    // A snapshot from an earlier compaction than the one its tail follows.
    std::fs::write(&snapshot_path, &whole).unwrap();
    let mut opened = Journal::open(&path, run_id(None, 0), 0).unwrap();
    opened.journal.compact(live.state.image()).unwrap();
    drop(opened);
    std::fs::write(&snapshot_path, &whole).unwrap();
    let err = reopened(&path, None).unwrap_err();
    assert!(
        err.to_string().contains("not of one run's history"),
        "{err}"
    );
}
