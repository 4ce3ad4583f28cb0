//! Support for `oxrl bench journal`: drives real coordinators through a long run on an
//! endless task, each operation journaled as in production, and times a restart's replay of
//! the whole journal against the compacted one (snapshot + tail).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as StdInstant};

use rollout::config::RunConfig;
use tokio::time::Instant;

use crate::domain::{
    Completion, LeaseRequest, MemberRole, ProblemResult, Publication, Registration,
};
use crate::error::CoordinatorError;
use crate::handle::Coordinator;
use crate::journal::JournalOptions;

/// What [`journal_replay`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalReplayReport {
    /// Records written (after the header) over the run.
    pub records: u64,
    /// Seconds the run took to drive both coordinators.
    pub write_s: f64,
    /// The uncompacted journal's size, bytes.
    pub full_bytes: u64,
    /// Seconds to open the uncompacted journal (read, parse, replay every record).
    pub full_open_s: f64,
    /// The compacted journal's snapshot and tail sizes, bytes, and the tail's records.
    pub snapshot_bytes: u64,
    pub tail_bytes: u64,
    pub tail_records: u64,
    /// Seconds to open the compacted journal (restore the snapshot, replay the tail).
    pub compacted_open_s: f64,
}

/// Drives two coordinators on an endless task through the same `records`-record run (actors
/// leasing and completing, prompts retiring, the learner publishing versions naming durable
/// groups, leases expiring, actors dying), one journal never compacted and one compacted
/// every `compact_every` records, both in `dir`; then opens each as a restarted coordinator
/// would and times it. The two restarted coordinators must agree on the run's status.
pub fn journal_replay(
    records: u64,
    compact_every: u64,
    dir: &Path,
) -> Result<JournalReplayReport, CoordinatorError> {
    let run = RunConfig {
        train_size: 0,
        ..RunConfig::default()
    };
    let options = |name: &str, every: u64| JournalOptions {
        path: dir.join(name),
        compact_every: every,
    };
    let full = options("full.journal", 0);
    let compacted = options("compacted.journal", compact_every);
    let started = StdInstant::now();
    {
        let pair = [
            Coordinator::new(run.clone(), Some(full.clone()))?,
            Coordinator::new(run.clone(), Some(compacted.clone()))?,
        ];
        drive(&pair, records)?;
        for coordinator in &pair {
            coordinator.sync_journal();
        }
    }
    let write_s = started.elapsed().as_secs_f64();
    let (full_open_s, full_status) = timed_open(&run, &full)?;
    let (compacted_open_s, compacted_status) = timed_open(&run, &compacted)?;
    if full_status != compacted_status {
        return Err(CoordinatorError::Bug {
            message: format!(
                "the compacted journal replayed to {compacted_status}, the full one to {full_status}"
            ),
        });
    }
    let size = |path: &PathBuf| std::fs::metadata(path).map_or(0, |m| m.len());
    let tail = std::fs::read(&compacted.path).unwrap_or_default();
    Ok(JournalReplayReport {
        records: count_records(&full.path),
        write_s,
        full_bytes: size(&full.path),
        full_open_s,
        snapshot_bytes: size(&crate::snapshot::path_for(&compacted.path)),
        tail_bytes: tail.len() as u64,
        tail_records: tail
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            .saturating_sub(1) as u64,
        compacted_open_s,
    })
}

/// Opens the journal `options` names as a restart would; the seconds and the run's status.
fn timed_open(
    run: &RunConfig,
    options: &JournalOptions,
) -> Result<(f64, String), CoordinatorError> {
    let started = StdInstant::now();
    let coordinator = Coordinator::new(run.clone(), Some(options.clone()))?;
    let seconds = started.elapsed().as_secs_f64();
    let status = coordinator.with_state(|s| {
        let status = s.snapshot(Instant::now());
        format!(
            "version {} active {} retired {} outstanding {} expired {} completed {} zero-variance {}",
            status.learner_version,
            status.pool_active,
            status.pool_retired,
            status.leases_outstanding,
            status.leases_expired,
            status.prompts_completed,
            status.zero_variance_groups
        )
    })?;
    Ok((seconds, status))
}

/// Lines after the header in the journal at `path`.
fn count_records(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        .saturating_sub(1) as u64
}

/// Runs the same operations, at the same simulated times, on every coordinator of `pair`
/// until the first has journaled `records` records.
fn drive(pair: &[Coordinator; 2], records: u64) -> Result<(), CoordinatorError> {
    let start = Instant::now();
    let mut tick = 0u64;
    // Simulated time: 1 ms an operation, so leases and actors time out as in a live run.
    let mut now = || {
        tick += 1;
        start + Duration::from_millis(tick)
    };
    let all = |op: &dyn Fn(&mut crate::state::State) -> Option<String>| -> Result<Option<String>, CoordinatorError> {
        let a = pair[0].with_state(op)?;
        let b = pair[1].with_state(op)?;
        debug_assert_eq!(a, b);
        Ok(a)
    };
    let register = |role: MemberRole, name: String, at: Instant| {
        all(&|s| {
            let registration = Registration {
                role,
                advertise_addr: "http://learner:7001".to_string(),
                name: name.clone(),
            };
            Some(s.register(registration, at).member_id)
        })
    };
    register(MemberRole::Learner, "learner".into(), now())?;
    let mut actors = Vec::new();
    for i in 0..8 {
        actors.push(register(MemberRole::Actor, format!("actor{i}"), now())?.unwrap_or_default());
    }
    let mut version = 0u64;
    let mut delivered: Vec<String> = Vec::new();
    let mut cycle = 0u64;
    let journaled = || pair[0].journal_tail_records();
    while journaled() < records {
        cycle += 1;
        for actor in &actors {
            let at = now();
            // Every 97th lease is abandoned: it expires after the lease timeout.
            let abandon = (cycle * 8 + delivered.len() as u64).is_multiple_of(97);
            let groups = all(&|s| {
                let request = LeaseRequest {
                    member_id: actor.clone(),
                    version,
                    max_prompts: 4,
                };
                let grant = s.lease(request, at).ok()?.outcome.ok()?;
                if abandon {
                    return None;
                }
                let results = grant
                    .prompts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| ProblemResult {
                        problem_id: p.id.clone(),
                        rewards: (0..4).map(|k| ((i + k) % 3 != 0) as u8 as f32).collect(),
                    })
                    .collect();
                let completion = Completion {
                    member_id: actor.clone(),
                    lease_id: grant.lease_id.clone(),
                    results,
                };
                s.complete(completion, at);
                Some(grant.group_ids.join("\n"))
            })?;
            if let Some(groups) = groups {
                delivered.extend(groups.split('\n').map(str::to_string));
            }
        }
        if cycle.is_multiple_of(2) {
            version += 1;
            let at = now();
            let durable: Vec<String> = std::mem::take(&mut delivered);
            all(&|s| {
                let publication = Publication {
                    version,
                    durable_group_ids: durable.clone(),
                    zero_variance_problem_ids: durable.iter().take(1).cloned().collect(),
                    ..Publication::default()
                };
                s.publish_version(publication, at);
                None
            })?;
        }
        if cycle.is_multiple_of(5_000) {
            ghost(pair, &format!("ghost{cycle}"), version, now())?;
        }
    }
    Ok(())
}

/// An actor joins every coordinator of `pair`, takes a lease and is never heard from again:
/// declared dead once the actor timeout has passed, its lease expired.
fn ghost(
    pair: &[Coordinator; 2],
    name: &str,
    version: u64,
    at: Instant,
) -> Result<(), CoordinatorError> {
    for coordinator in pair {
        coordinator.with_state(|s| {
            let registration = Registration {
                role: MemberRole::Actor,
                advertise_addr: String::new(),
                name: name.to_string(),
            };
            let member_id = s.register(registration, at).member_id;
            let request = LeaseRequest {
                member_id,
                version,
                max_prompts: 2,
            };
            let _ = s.lease(request, at);
        })?;
    }
    Ok(())
}
