//! Faults in the pipeline: a dead actor loses nothing and no group is trained twice (a
//! delivery repeated after a lease expired is a duplicate), and the learner rejects
//! malformed groups with a clear reason and keeps serving.

mod common;

use common::{read_jsonl, wait_until, RoleProcess};
use std::time::Duration;

fn write_config(dir: &std::path::Path, steps: u64) -> std::path::PathBuf {
    let path = dir.join("run.toml");
    let text = format!(
        "steps = {steps}\nprompts_per_step = 8\ngroup_size = 4\neval_every = 0\ncheckpoint_every = 0\n\
         [pipeline]\nprompts_per_lease = 4\nlease_timeout_s = 2.0\nactor_timeout_s = 1.0\nheartbeat_interval_ms = 100\nlearner_queue = 8\n"
    );
    std::fs::write(&path, text).unwrap();
    path
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

/// A well-formed group of two samples for `prompt` of `lease`, sampled with `version`.
fn valid_group(
    lease: &proto::LeaseReply,
    prompt: &proto::Prompt,
    version: u64,
) -> proto::RolloutGroup {
    proto::RolloutGroup {
        group_id: prompt.group_id.clone(),
        lease_id: lease.lease_id.clone(),
        problem_id: prompt.problem_id.clone(),
        prompt_tokens: vec![10, 11, 12],
        samples: (0..2)
            .map(|i| proto::Sample {
                tokens: vec![20, 2],
                logprobs: vec![-0.5, -0.1],
                versions: vec![version, version],
                reward: i as f32,
                truncated: false,
                text: String::new(),
            })
            .collect(),
    }
}

/// An actor that leases prompts, delivers their groups and dies before completing the lease
/// (so its prompts are leased again): returns the group ids it delivered.
fn ghost_delivers_and_dies(caddr: &str, learner_url: &str) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c =
            proto::coordinator_client::CoordinatorClient::connect(format!("http://{caddr}"))
                .await
                .unwrap();
        let me = c
            .register(proto::RegisterRequest {
                role: proto::Role::Actor as i32,
                advertise_addr: String::new(),
                name: "ghost".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let version = c
            .status(proto::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .learner_version;
        let lease = c
            .lease(proto::LeaseRequest {
                member_id: me.member_id.clone(),
                version,
                max_prompts: 2,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            lease.refused.is_empty(),
            "ghost: no lease: {}",
            lease.refused
        );
        let groups: Vec<_> = lease
            .prompts
            .iter()
            .map(|p| valid_group(&lease, p, version))
            .collect();
        let ids = groups.iter().map(|g| g.group_id.clone()).collect();
        let mut l = proto::learner_client::LearnerClient::connect(learner_url.to_string())
            .await
            .unwrap();
        let mut acks = l
            .push_rollouts(tokio_stream::iter(groups))
            .await
            .unwrap()
            .into_inner();
        while let Some(a) = acks.message().await.unwrap() {
            assert_eq!(
                a.outcome,
                proto::push_ack::Outcome::Accepted as i32,
                "ghost: {a:?}"
            );
        }
        ids
    })
}

/// The group ids in the batch of every step, in order.
fn trained_groups(run: &std::path::Path) -> Vec<String> {
    read_jsonl(&run.join("trained_groups.jsonl"))
        .iter()
        .flat_map(|l| l["groups"].as_array().unwrap().clone())
        .map(|g| g.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_killed_actor_loses_no_prompt_and_nothing_is_trained_twice() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let steps = 100;
    let cfg = write_config(d, steps);
    let run = d.join("run");
    let journal = d.join("journal.jsonl");
    let coord = RoleProcess::start(
        &[
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--config",
            cfg.to_str().unwrap(),
            "--journal",
            journal.to_str().unwrap(),
        ],
        &d.join("c.log"),
        true,
    );
    let caddr = coord.addr.clone().unwrap();
    let url = format!("http://{caddr}");
    let mut learner = RoleProcess::start(
        &[
            "learner",
            "--coordinator",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--out",
            run.to_str().unwrap(),
        ],
        &d.join("l.log"),
        true,
    );
    let learner_url = format!("http://{}", learner.addr.clone().unwrap());
    let mut doomed = RoleProcess::start(
        &["actor", "--coordinator", &url, "--name", "doomed"],
        &d.join("a0.log"),
        false,
    );
    let survivor = RoleProcess::start(
        &["actor", "--coordinator", &url, "--name", "survivor"],
        &d.join("a1.log"),
        false,
    );
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
    let trained = trained_groups(&run);
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
    let coord = RoleProcess::start(
        &[
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &d.join("c.log"),
        true,
    );
    let url = format!("http://{}", coord.addr.clone().unwrap());
    let learner = RoleProcess::start(
        &[
            "learner",
            "--coordinator",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--out",
            d.join("run").to_str().unwrap(),
        ],
        &d.join("l.log"),
        true,
    );
    let lurl = format!("http://{}", learner.addr.clone().unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = proto::coordinator_client::CoordinatorClient::connect(url.clone())
            .await
            .unwrap();
        let me = c
            .register(proto::RegisterRequest {
                role: proto::Role::Actor as i32,
                advertise_addr: String::new(),
                name: "probe".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let mut lease = c
            .lease(proto::LeaseRequest {
                member_id: me.member_id.clone(),
                version: 0,
                max_prompts: 1,
            })
            .await
            .unwrap()
            .into_inner();
        // The learner registers and publishes version 0 shortly after it listens.
        let until = std::time::Instant::now() + Duration::from_secs(30);
        while !lease.refused.is_empty() {
            assert!(
                std::time::Instant::now() < until,
                "no lease: {}",
                lease.refused
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            lease = c
                .lease(proto::LeaseRequest {
                    member_id: me.member_id.clone(),
                    version: 0,
                    max_prompts: 1,
                })
                .await
                .unwrap()
                .into_inner();
        }
        let problem = lease.prompts[0].problem_id.clone();
        let good = |id: &str| proto::RolloutGroup {
            group_id: id.into(),
            lease_id: lease.lease_id.clone(),
            problem_id: problem.clone(),
            prompt_tokens: vec![10, 11, 12],
            samples: (0..2)
                .map(|i| proto::Sample {
                    tokens: vec![20, 2],
                    logprobs: vec![-0.5, -0.1],
                    versions: vec![0, 0],
                    reward: i as f32,
                    truncated: false,
                    text: String::new(),
                })
                .collect(),
        };
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
        let mut acks = l
            .push_rollouts(tokio_stream::iter(groups))
            .await
            .unwrap()
            .into_inner();
        let mut got = Vec::new();
        while let Some(a) = acks.message().await.unwrap() {
            got.push((a.group_id, a.outcome, a.reason));
        }
        use proto::push_ack::Outcome;
        let expect = [
            ("nan", Outcome::Rejected, "log-prob"),
            ("lengths", Outcome::Rejected, "log-probs"),
            ("vocab", Outcome::Rejected, "vocabulary"),
            ("unknown", Outcome::Rejected, "unknown lease"),
            ("ok", Outcome::Accepted, ""),
            ("ok", Outcome::Duplicate, "already"),
        ];
        assert_eq!(got.len(), expect.len(), "{got:?}");
        for ((id, outcome, reason), (eid, eo, ereason)) in got.iter().zip(expect) {
            assert_eq!((id.as_str(), *outcome), (eid, eo as i32), "{got:?}");
            assert!(
                reason.contains(ereason),
                "{id}: {reason:?} should mention {ereason:?}"
            );
        }
        // Still serving: the weight stream answers with version 0.
        let mut w = l
            .subscribe_weights(proto::SubscribeWeightsRequest {
                after_version: 0,
                member_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = w.message().await.unwrap().unwrap();
        assert!(
            matches!(first.part, Some(proto::weights_chunk::Part::Header(ref h)) if h.version == 0)
        );
    });
    learner.stop();
    coord.stop();
}
