//! Restarts in the pipeline, with the real binaries: a learner killed with SIGKILL and
//! started again on the same `--out` resumes from its last checkpoint; a coordinator killed
//! and started again on the same `--journal` and address carries on the run. In both, the
//! processes that stayed up reconnect by themselves and the run completes.

mod common;

use common::{
    free_port, learner_args, lease_now, push_acks, read_jsonl, start_actor, start_coordinator,
    start_learner, two_sample_group, wait_until, write_run_config, RoleProcess,
};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A small run with the lag bound `max_lag`.
fn write_config(dir: &Path, steps: u64, checkpoint_every: u64, max_lag: u64) -> PathBuf {
    let text = format!(
        "steps = {steps}\nprompts_per_step = 4\ngroup_size = 8\neval_every = 0\ncheckpoint_every = {checkpoint_every}\n\
         [update]\nmax_lag = {max_lag}\n\
         [pipeline]\nprompts_per_lease = 2\nlease_timeout_s = 4.0\nactor_timeout_s = 3.0\nheartbeat_interval_ms = 100\nlearner_queue = 8\n"
    );
    write_run_config(dir, &text)
}

fn status(addr: &str) -> Option<proto::StatusReply> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = proto::coordinator_client::CoordinatorClient::connect(format!("http://{addr}"))
            .await
            .ok()?;
        c.status(proto::StatusRequest {})
            .await
            .ok()
            .map(|r| r.into_inner())
    })
}

/// The newest checkpoint's step and version, if any.
fn latest_checkpoint(run: &Path) -> Option<(u64, u64)> {
    let mut best = None;
    for entry in std::fs::read_dir(run.join("checkpoints")).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name().into_string().ok()?;
        let Some(step) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path().join("state.json")) else {
            continue;
        };
        let state: serde_json::Value = serde_json::from_str(&text).ok()?;
        let version = state["version"].as_u64()?;
        if best.is_none_or(|(s, _)| step > s) {
            best = Some((step, version));
        }
    }
    best
}

/// The groups each step trained on, in the lineage that survived (a step trained again after
/// a restart replaces the lost one).
fn trained_groups(run: &Path) -> HashMap<u64, Vec<String>> {
    let mut by_step = HashMap::new();
    for line in read_jsonl(&run.join("trained_groups.jsonl")) {
        let groups = line["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap().to_string())
            .collect();
        by_step.insert(line["step"].as_u64().unwrap(), groups);
    }
    by_step
}

/// Every trained group id, checking that none was trained twice.
fn unique_trained(run: &Path) -> HashSet<String> {
    let mut seen = HashSet::new();
    for (step, groups) in trained_groups(run) {
        for g in groups {
            assert!(
                seen.insert(g.clone()),
                "group {g} trained twice (again at step {step})"
            );
        }
    }
    seen
}

/// Steps follow one another and the version never goes back, moving by at most one a step.
fn assert_consecutive(lines: &[serde_json::Value]) {
    for pair in lines.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert_eq!(
            b["step"].as_u64().unwrap(),
            a["step"].as_u64().unwrap() + 1,
            "{a} -> {b}"
        );
        let (va, vb) = (
            a["version"].as_u64().unwrap(),
            b["version"].as_u64().unwrap(),
        );
        assert!(vb == va || vb == va + 1, "version {va} -> {vb}: {a} -> {b}");
    }
}

fn actor(url: &str, i: usize, dir: &Path) -> RoleProcess {
    let name = format!("actor-{i}");
    start_actor(url, &name, &dir.join(format!("{name}.log")))
}

/// Waits for every actor to stop by itself (the coordinator tells them the run is over).
fn actors_finish(actors: Vec<RoleProcess>, dir: &Path) {
    for (i, mut a) in actors.into_iter().enumerate() {
        let status = a.wait(Duration::from_secs(30)).unwrap_or_else(|| {
            panic!(
                "actor-{i} did not stop after the run; see {}",
                dir.display()
            )
        });
        assert!(
            status.success(),
            "actor-{i} failed; see {}",
            dir.join(format!("actor-{i}.log")).display()
        );
    }
}

#[test]
fn a_learner_killed_mid_run_resumes_from_its_checkpoint_and_the_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let steps = 40;
    // k = 1: an actor that kept the lost learner's version as "the learner's" would wait for
    // weights the restarted learner does not have yet, while the learner waits for groups.
    let cfg = write_config(d, steps, 8, 1);
    let coord = start_coordinator(d, &cfg, &[]);
    let caddr = coord.addr.clone().unwrap();
    let url = coord.url();
    let run = d.join("run");
    let run_s = run.to_str().unwrap().to_string();
    let mut first = RoleProcess::start(&learner_args(&url, &run_s), &d.join("l1.log"), true);
    let actors: Vec<_> = (0..2).map(|i| actor(&url, i, d)).collect();

    // Kill it between checkpoints, a few steps (more than max_lag) past the last one: those
    // steps are lost, and the version goes back.
    let metrics = run.join("metrics.jsonl");
    wait_until(
        Duration::from_secs(120),
        "a checkpoint and three steps past it",
        || {
            latest_checkpoint(&run).is_some_and(|(s, _)| {
                metrics.exists() && read_jsonl(&metrics).len() as u64 >= s + 3
            })
        },
    );
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let (ckpt_step, ckpt_version) = latest_checkpoint(&run).unwrap();
    let before = read_jsonl(&metrics);
    assert!(
        (before.len() as u64) < steps,
        "the run should still be going when the learner is killed"
    );
    let old_learner_addr = first.addr.clone().unwrap();

    // A new learner on the same --out (and a new port: actors learn it from the coordinator).
    let mut second = RoleProcess::start(&learner_args(&url, &run_s), &d.join("l2.log"), true);
    assert_ne!(second.addr.clone().unwrap(), old_learner_addr);
    // A group its checkpoint was trained on, delivered again (say its lease expired and the
    // prompt was leased again), is a duplicate for the new learner too.
    let trained_first = trained_groups(&run)[&1][0].clone();
    let (lease_id, problem_id) = trained_first.split_once('/').unwrap();
    let again = rt_block_on(push_group(
        &second.url(),
        &trained_first,
        lease_id,
        problem_id,
        ckpt_version,
    ))
    .unwrap();
    assert_eq!(
        again,
        vec![proto::push_ack::Outcome::Duplicate as i32],
        "{trained_first}"
    );
    let finished = second
        .wait(Duration::from_secs(180))
        .unwrap_or_else(|| panic!("the resumed run did not finish; see {}", d.display()));
    assert!(
        finished.success(),
        "the restarted learner failed; see {}",
        d.join("l2.log").display()
    );

    let log = std::fs::read_to_string(d.join("l2.log")).unwrap();
    assert!(
        log.contains("resuming"),
        "the second learner did not resume: {log}"
    );
    let lines = read_jsonl(&metrics);
    let resumed = &lines[before.len()..];
    assert!(!resumed.is_empty());
    assert_eq!(
        resumed[0]["step"],
        ckpt_step + 1,
        "resumed at the wrong step"
    );
    // One version per optimizer step (a step whose groups all had zero variance has none).
    let first_version = resumed[0]["version"].as_u64().unwrap();
    assert!(
        first_version == ckpt_version || first_version == ckpt_version + 1,
        "resumed at version {first_version}, the checkpoint had {ckpt_version}"
    );
    assert_consecutive(resumed);
    for l in resumed {
        assert_eq!(l["prompts"], 4, "a step without a full batch: {l}");
    }
    let last = lines.last().unwrap();
    assert_eq!(last["step"].as_u64(), Some(steps));
    assert!(
        last["version"].as_u64().unwrap() > ckpt_version,
        "no step trained after the restart"
    );
    assert!(run.join("final/config.json").exists());
    unique_trained(&run);

    // The actors that were never restarted found the new learner, kept working and stop now.
    let st = status(&caddr).expect("coordinator status");
    assert!(st.done, "{st:?}");
    assert_eq!(Some(st.learner_version), last["version"].as_u64(), "{st:?}");
    assert!(
        st.actors.iter().all(|a| a.alive),
        "an actor was declared dead: {st:?}"
    );
    actors_finish(actors, d);
    coord.stop();
}

/// Pushes a well-formed group with these ids, sampled with `version`; the outcomes, or the
/// status the push failed with.
async fn push_group(
    learner_url: &str,
    group_id: &str,
    lease_id: &str,
    problem_id: &str,
    version: u64,
) -> Result<Vec<i32>, tonic::Status> {
    let group = two_sample_group(group_id, lease_id, problem_id, version);
    let acks = push_acks(learner_url, vec![group]).await?;
    Ok(acks.iter().map(|a| a.outcome).collect())
}

fn rt_block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

/// A hand-driven actor holding a one-prompt lease.
struct Probe {
    member_id: String,
    lease: proto::LeaseReply,
    version: u64,
}

impl Probe {
    async fn lease(addr: &str) -> Probe {
        let (member_id, version, lease) = lease_now(&format!("http://{addr}"), "probe", 1).await;
        Probe {
            member_id,
            lease,
            version,
        }
    }

    /// Pushes the lease's group; the outcomes, or the status the push failed with.
    async fn push(&self, learner_url: &str) -> Result<Vec<i32>, tonic::Status> {
        let prompt = &self.lease.prompts[0];
        push_group(
            learner_url,
            &prompt.group_id,
            &self.lease.lease_id,
            &prompt.problem_id,
            self.version,
        )
        .await
    }

    /// Completes the lease; whether the coordinator took it as the holder's completion.
    async fn complete(&self, addr: &str) -> bool {
        let mut c = proto::coordinator_client::CoordinatorClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let prompt = &self.lease.prompts[0];
        c.complete(proto::CompleteRequest {
            member_id: self.member_id.clone(),
            lease_id: self.lease.lease_id.clone(),
            results: vec![proto::ProblemResult {
                problem_id: prompt.problem_id.clone(),
                rewards: vec![0.0, 1.0],
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .accepted
    }
}

/// Grants in journal lines `..upto`: group ids by lease.
fn granted_groups(journal: &Path, upto: usize) -> HashMap<String, Vec<String>> {
    let mut grants = HashMap::new();
    for line in read_jsonl(journal).into_iter().take(upto) {
        if line["kind"] == "grant" {
            let groups = line["prompts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["group"].as_str().unwrap().to_string())
                .collect();
            grants.insert(line["lease"].as_str().unwrap().to_string(), groups);
        }
    }
    grants
}

#[test]
fn a_coordinator_killed_mid_run_recovers_from_its_journal_and_no_prompt_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let steps = 40;
    let cfg = write_config(d, steps, 0, 8);
    let journal = d.join("journal.jsonl");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let coord_args = [
        "coordinator",
        "--listen",
        &listen,
        "--config",
        cfg.to_str().unwrap(),
        "--journal",
        journal.to_str().unwrap(),
    ];
    let mut coord = RoleProcess::start(&coord_args, &d.join("c1.log"), true);
    let url = format!("http://{listen}");
    let run = d.join("run");
    let mut learner = start_learner(d, &url, &run, &[]);
    let learner_url = learner.url();
    let actors: Vec<_> = (0..2).map(|i| actor(&url, i, d)).collect();

    let metrics = run.join("metrics.jsonl");
    wait_until(
        Duration::from_secs(120),
        "three steps with leases out",
        || {
            metrics.exists()
                && read_jsonl(&metrics).len() >= 3
                && status(&listen).is_some_and(|s| s.leases_outstanding > 0)
        },
    );
    let probe = rt_block_on(Probe::lease(&listen));
    let before = status(&listen).unwrap();
    coord.child.kill().unwrap();
    coord.child.wait().unwrap();
    let journal_lines = read_jsonl(&journal).len();
    let granted = granted_groups(&journal, journal_lines);
    assert!(
        (read_jsonl(&metrics).len() as u64) < steps,
        "the run should still be going when the coordinator is killed"
    );
    // A group whose lease the learner cannot check now is not rejected (the prompt would be
    // lost: the actor completes the lease after pushing); the push fails, to be made again.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let refused = rt
        .block_on(probe.push(&learner_url))
        .expect_err("the learner decided on a group it could not check");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");
    assert!(
        refused.message().contains("could not check lease"),
        "{refused}"
    );
    // The actors notice too, and keep retrying.
    let log = |f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_default();
    wait_until(
        Duration::from_secs(30),
        "an actor noticing the coordinator is gone",
        || {
            ["actor-0.log", "actor-1.log"]
                .iter()
                .any(|f| log(f).contains("retrying"))
        },
    );

    let coord = RoleProcess::start(&coord_args, &d.join("c2.log"), true);
    assert_eq!(coord.addr.as_deref(), Some(listen.as_str()));
    let replayed = std::fs::read_to_string(d.join("c2.log")).unwrap();
    assert!(replayed.contains("replayed the journal"), "{replayed}");
    let after = status(&listen).unwrap();
    // The probe's lease survived the restart: its group is taken now and the lease completes.
    let outcomes = rt.block_on(probe.push(&learner_url)).unwrap();
    assert_eq!(outcomes, vec![proto::push_ack::Outcome::Accepted as i32]);
    assert!(
        rt.block_on(probe.complete(&listen)),
        "the replayed lease was not completed"
    );
    assert!(
        after.prompts_completed >= before.prompts_completed,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.pool_retired >= before.pool_retired,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.zero_variance_groups >= before.zero_variance_groups,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.learner_version >= before.learner_version,
        "{before:?} -> {after:?}"
    );
    assert!(after.actors.len() >= 3, "members lost: {after:?}");

    let finished = learner
        .wait(Duration::from_secs(180))
        .unwrap_or_else(|| panic!("the run did not finish; see {}", d.display()));
    assert!(
        finished.success(),
        "the learner failed; see {}",
        d.join("l.log").display()
    );
    let lines = read_jsonl(&metrics);
    assert_eq!(lines.len() as u64, steps);
    assert_eq!(lines[0]["step"], 1);
    assert_consecutive(&lines);
    for l in &lines {
        assert_eq!(l["prompts"], 4, "a step without a full batch: {l}");
    }

    // Nothing trained twice, and every prompt granted before the crash was trained: the
    // leases the restarted coordinator replayed were completed or leased again, not lost.
    let dropped: u64 = lines
        .iter()
        .map(|l| l["dropped_stale"].as_u64().unwrap())
        .sum();
    assert_eq!(dropped, 0, "groups dropped as stale would look lost");
    let trained = unique_trained(&run);
    let lost: Vec<_> = granted
        .values()
        .flatten()
        .filter(|g| !trained.contains(*g))
        .collect();
    assert!(
        lost.is_empty(),
        "granted before the crash, never trained: {lost:?}"
    );
    let completed_after_restart: HashSet<String> = read_jsonl(&journal)
        .into_iter()
        .skip(journal_lines)
        .filter(|l| l["kind"] == "complete" && l["accepted"] == true)
        .map(|l| l["lease"].as_str().unwrap().to_string())
        .collect();
    assert!(
        granted
            .keys()
            .any(|lease| completed_after_restart.contains(lease)),
        "no lease from before the crash was completed after it: were the leases replayed?"
    );

    let st = status(&listen).unwrap();
    assert!(st.done, "{st:?}");
    assert!(
        st.actors
            .iter()
            .filter(|a| a.name != "probe")
            .all(|a| a.alive),
        "an actor was declared dead: {st:?}"
    );
    actors_finish(actors, d);
    coord.stop();
}
