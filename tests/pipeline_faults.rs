//! Faults in the pipeline: a dead actor loses nothing and no group is trained twice (a
//! delivery repeated after a lease expired is a duplicate), and the learner rejects
//! malformed groups with a clear reason and keeps serving.

mod common;

use common::supervised::signal;
use common::{
    assert_acks, first_weights_chunk, lease_now, probe_lease, push_acks, push_acks_with,
    read_jsonl, start_actor, start_coordinator, start_learner, trained_group_ids, two_sample_group,
    wait_until, write_run_config,
};
use std::time::Duration;

fn write_config(dir: &std::path::Path, steps: u64) -> std::path::PathBuf {
    let text = format!(
        "steps = {steps}\nprompts_per_step = 8\ngroup_size = 4\neval_every = 0\ncheckpoint_every = 0\n\
         [pipeline]\nprompts_per_lease = 4\nlease_timeout_s = 2.0\nactor_timeout_s = 1.0\nheartbeat_interval_ms = 100\nlearner_queue = 8\n"
    );
    write_run_config(dir, &text)
}

fn status(addr: &str) -> proto::StatusReply {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = proto::coordinator_client::CoordinatorClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        c.status(proto::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
    })
}

/// An actor that leases prompts, delivers their groups and dies before completing the lease
/// (so its prompts are leased again): returns the group ids it delivered.
fn ghost_delivers_and_dies(caddr: &str, learner_url: &str) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (_, version, lease) = lease_now(&format!("http://{caddr}"), "ghost", 2).await;
        let groups: Vec<_> = lease
            .prompts
            .iter()
            .map(|p| two_sample_group(&p.group_id, &lease.lease_id, &p.problem_id, version))
            .collect();
        let ids = groups.iter().map(|g| g.group_id.clone()).collect();
        for a in push_acks(learner_url, groups).await.unwrap() {
            assert_eq!(
                a.outcome,
                proto::push_ack::Outcome::Accepted as i32,
                "ghost: {a:?}"
            );
        }
        ids
    })
}

#[test]
fn a_killed_actor_loses_no_prompt_and_nothing_is_trained_twice() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let steps = 100;
    let cfg = write_config(d, steps);
    let run = d.join("run");
    let journal = d.join("journal.jsonl");
    let coord = start_coordinator(d, &cfg, &["--journal", journal.to_str().unwrap()]);
    let caddr = coord.addr.clone().unwrap();
    let url = coord.url();
    let mut learner = start_learner(d, &url, &run, &[]);
    let learner_url = learner.url();
    let mut doomed = start_actor(&url, "doomed", &d.join("a0.log"));
    let survivor = start_actor(&url, "survivor", &d.join("a1.log"));
    let metrics = run.join("metrics.jsonl");
    wait_until(Duration::from_secs(120), "the first step", || {
        metrics.exists() && !read_jsonl(&metrics).is_empty()
    });
    // Delivered but never completed: the prompts come back under the same group ids, and
    // the learner must take the second delivery as a duplicate.
    let ghost_groups = ghost_delivers_and_dies(&caddr, &learner_url);
    wait_until(
        Duration::from_secs(60),
        "the doomed actor holding a lease",
        || status(&caddr).leases_outstanding > 0,
    );
    // The learner is frozen while the deaths are noticed, so that the run cannot finish
    // first however fast its steps are (it once did, on a fast CI machine).
    let learner_pid = learner.child.id();
    signal(learner_pid, "-STOP");
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    // The coordinator notices the silence and returns the dead actors' leases to the pool.
    wait_until(
        Duration::from_secs(30),
        "the killed actor and the ghost declared dead",
        || {
            let st = status(&caddr);
            let dead = |name: &str| st.actors.iter().any(|a| a.name == name && !a.alive);
            dead("doomed") && dead("ghost") && st.leases_expired >= 2
        },
    );
    let steps_at_death = read_jsonl(&metrics).len();
    assert!(
        steps_at_death < steps as usize,
        "the run should still be going when the actor is declared dead"
    );
    signal(learner_pid, "-CONT");
    let st = status(&caddr);
    let doomed_id = st
        .actors
        .iter()
        .find(|a| a.name == "doomed")
        .unwrap()
        .member_id
        .clone();
    let finished = learner
        .wait(Duration::from_secs(180))
        .expect("the run completes without the killed actor");
    assert!(
        finished.success(),
        "learner failed; see {}",
        d.join("l.log").display()
    );
    let st = status(&caddr);
    let mut dead: Vec<_> = st
        .actors
        .iter()
        .filter(|a| !a.alive)
        .map(|a| a.name.clone())
        .collect();
    dead.sort();
    assert_eq!(
        dead,
        vec!["doomed".to_string(), "ghost".to_string()],
        "{st:?}"
    );
    let lines = read_jsonl(&metrics);
    assert_eq!(lines.len(), steps as usize);
    assert!(
        lines.iter().all(|l| l["prompts"] == 8),
        "every step consumed a full batch"
    );

    // Nothing trained twice: every group id at most once across all steps ...
    let trained = trained_group_ids(&run);
    assert_eq!(trained.len(), steps as usize * 8);
    let unique: std::collections::HashSet<_> = trained.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        trained.len(),
        "a group was trained twice: {trained:?}"
    );
    // ... the ghost's groups once, their second delivery refused as duplicates ...
    for g in &ghost_groups {
        assert!(
            unique.contains(g),
            "the ghost's group {g} was never trained"
        );
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("learner_summary.json")).unwrap())
            .unwrap();
    let duplicates = summary["duplicates"].as_u64().unwrap();
    assert!(duplicates >= ghost_groups.len() as u64, "{summary}");
    assert_eq!(summary["rejected"], 0, "{summary}");
    // ... and nothing lost: every prompt leased to the killed actor was trained.
    let granted: Vec<String> = read_jsonl(&journal)
        .iter()
        .filter(|l| l["kind"] == "grant" && l["member"] == doomed_id.as_str())
        .flat_map(|l| l["prompts"].as_array().unwrap().clone())
        .map(|p| p["group"].as_str().unwrap().to_string())
        .collect();
    assert!(!granted.is_empty());
    for g in &granted {
        assert!(
            unique.contains(g),
            "{g}, leased to the killed actor, was never trained"
        );
    }
    survivor.stop();
    coord.stop();
}

#[test]
fn the_learner_rejects_malformed_groups_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = write_config(d, 8);
    let coord = start_coordinator(d, &cfg, &[]);
    let url = coord.url();
    let learner = start_learner(d, &url, &d.join("run"), &[]);
    let lurl = learner.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let lease = probe_lease(&url, 1, Duration::from_secs(30)).await;
        let problem = lease.prompts[0].problem_id.clone();
        let good = |id: &str| two_sample_group(id, &lease.lease_id, &problem, 0);
        let mut nan = good("nan");
        nan.samples[0].logprobs[1] = f32::NAN;
        let mut lengths = good("lengths");
        lengths.samples[1].logprobs.pop();
        let mut vocab = good("vocab");
        vocab.samples[0].tokens[0] = 100_000;
        let mut unknown = good("unknown");
        unknown.lease_id = "lease-999999".into();
        let groups = vec![nan, lengths, vocab, unknown, good("ok"), good("ok")];
        let mut l = proto::learner_client::LearnerClient::connect(lurl.clone())
            .await
            .unwrap();
        let got: Vec<_> = push_acks_with(&mut l, groups)
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.group_id, a.outcome, a.reason))
            .collect();
        use proto::push_ack::Outcome;
        let expect = [
            ("nan", Outcome::Rejected, "log-prob"),
            ("lengths", Outcome::Rejected, "log-probs"),
            ("vocab", Outcome::Rejected, "vocabulary"),
            ("unknown", Outcome::Rejected, "unknown lease"),
            ("ok", Outcome::Accepted, ""),
            ("ok", Outcome::Duplicate, "already"),
        ];
        assert_acks(&got, &expect);
        // Still serving: the weight stream answers with version 0.
        let first = first_weights_chunk(&mut l).await;
        assert!(
            matches!(first.part, Some(proto::weights_chunk::Part::Header(ref h)) if h.version == 0)
        );
    });
    learner.stop();
    coord.stop();
}
