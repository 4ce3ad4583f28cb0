//! Faults in the pipeline: a dead actor loses nothing, and the learner rejects malformed
//! groups with a clear reason and keeps serving.

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

#[test]
fn a_killed_actor_loses_no_prompt_and_the_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let steps = 60;
    let cfg = write_config(d, steps);
    let run = d.join("run");
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
    wait_until(
        Duration::from_secs(60),
        "the doomed actor holding a lease",
        || status(&caddr).leases_outstanding > 0,
    );
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    // The coordinator notices the silence and returns the dead actor's lease to the pool.
    wait_until(
        Duration::from_secs(30),
        "the killed actor declared dead",
        || {
            let st = status(&caddr);
            st.actors.iter().any(|a| a.name == "doomed" && !a.alive) && st.leases_expired >= 1
        },
    );
    let steps_at_death = read_jsonl(&metrics).len();
    assert!(
        steps_at_death < steps as usize,
        "the run should still be going when the actor is declared dead"
    );
    let finished = learner
        .wait(Duration::from_secs(180))
        .expect("the run completes without the killed actor");
    assert!(
        finished.success(),
        "learner failed; see {}",
        d.join("l.log").display()
    );
    let st = status(&caddr);
    let dead: Vec<_> = st
        .actors
        .iter()
        .filter(|a| !a.alive)
        .map(|a| a.name.clone())
        .collect();
    assert_eq!(dead, vec!["doomed".to_string()], "{st:?}");
    let lines = read_jsonl(&metrics);
    assert_eq!(lines.len(), steps as usize);
    assert!(
        lines.iter().all(|l| l["prompts"] == 8),
        "every step consumed a full batch"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("learner_summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["duplicates"], 0, "{summary}");
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
