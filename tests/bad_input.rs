//! Bad input over the wire, as docs/bad-input.md lists it: the learner refuses each kind with
//! a clear reason and a metric (`oxrl_rejected_total{reason}`), keeps serving, and trains on
//! what it accepted, once. The cases covered elsewhere are named in that table.

mod common;

use common::{
    assert_acks, http_get, metric, probe_lease, push_acks, start_coordinator, start_learner,
    trained_group_ids, two_sample_group, wait_until, write_run_config,
};
use proto::push_ack::Outcome;
use std::time::Duration;

fn group(id: &str, lease: &proto::LeaseReply, problem: usize, version: u64) -> proto::RolloutGroup {
    let problem = &lease.prompts[problem].problem_id;
    two_sample_group(id, &lease.lease_id, problem, version)
}

fn rejected(text: &str, reason: &str) -> f64 {
    metric(text, &format!("oxrl_rejected_total{{reason=\"{reason}\"}}")).unwrap_or(0.0)
}

/// Pushes `groups` on one stream; the acks as (group id, outcome, reason), or the status
/// that ended the stream.
async fn push(
    url: &str,
    groups: Vec<proto::RolloutGroup>,
) -> Result<Vec<(String, i32, String)>, tonic::Status> {
    let acks = push_acks(url, groups).await?;
    Ok(acks
        .into_iter()
        .map(|a| (a.group_id, a.outcome, a.reason))
        .collect())
}

#[test]
fn bad_groups_are_refused_counted_and_the_rest_trained_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // One group per step and k = 0: every step makes the previous version stale.
    let cfg = write_run_config(
        d,
        "steps = 100\nprompts_per_step = 1\ngroup_size = 2\neval_every = 0\ncheckpoint_every = 0\n\
         [update]\nmax_lag = 0\n[pipeline]\nprompts_per_lease = 4\nheartbeat_interval_ms = 100\n",
    );
    let coord = start_coordinator(d, &cfg, &[]);
    let url = coord.url();
    let out = d.join("run");
    let mut learner = start_learner(d, &url, &out, &["--metrics-listen", "127.0.0.1:0"]);
    let lurl = learner.url();
    let maddr = learner.metrics_addr();
    let scrape = || http_get(&maddr, "/metrics");
    let rt = tokio::runtime::Runtime::new().unwrap();

    let lease = rt.block_on(probe_lease(&url, 4, Duration::from_secs(30)));
    assert_eq!(lease.prompts.len(), 4);

    // Non-finite numbers and a duplicate, then one good group (trained: version 1).
    let mut inf_logprob = group("inf-logprob", &lease, 0, 0);
    inf_logprob.samples[0].logprobs[0] = f32::INFINITY;
    let mut positive_logprob = group("positive-logprob", &lease, 0, 0);
    positive_logprob.samples[1].logprobs[1] = 0.5;
    let mut inf_reward = group("inf-reward", &lease, 0, 0);
    inf_reward.samples[1].reward = f32::NEG_INFINITY;
    let mut nan_reward = group("nan-reward", &lease, 0, 0);
    nan_reward.samples[0].reward = f32::NAN;
    let acks = rt
        .block_on(push(
            &lurl,
            vec![
                inf_logprob,
                positive_logprob,
                inf_reward,
                nan_reward,
                group("a", &lease, 0, 0),
                group("a", &lease, 0, 0),
            ],
        ))
        .unwrap();
    let expect = [
        ("inf-logprob", Outcome::Rejected, "log-prob"),
        ("positive-logprob", Outcome::Rejected, "log-prob"),
        ("inf-reward", Outcome::Rejected, "reward"),
        ("nan-reward", Outcome::Rejected, "reward"),
        ("a", Outcome::Accepted, ""),
        ("a", Outcome::Duplicate, "already"),
    ];
    assert_acks(&acks, &expect);

    // A message over the size limit ends its stream with OUT_OF_RANGE; nothing else is lost.
    let mut huge = group("huge", &lease, 1, 0);
    let n = proto::MAX_MESSAGE_BYTES / 4 + 1;
    huge.samples[0].tokens = vec![20; n];
    huge.samples[0].logprobs = vec![-0.5; n];
    huge.samples[0].versions = vec![0; n];
    let err = rt
        .block_on(push(&lurl, vec![huge]))
        .expect_err("an oversized group");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");

    wait_until(
        Duration::from_secs(60),
        "version 1 (group a trained)",
        || metric(&scrape(), "oxrl_learner_version") == Some(1.0),
    );
    // Sampled with version 0, now past the lag bound k = 0: accepted at the door (it was
    // fresh when sent), dropped by the trainer and counted; the next good group trains.
    let acks = rt
        .block_on(push(
            &lurl,
            vec![group("stale", &lease, 2, 0), group("fresh", &lease, 3, 1)],
        ))
        .unwrap();
    assert!(
        acks.iter().all(|a| a.1 == Outcome::Accepted as i32),
        "{acks:?}"
    );
    wait_until(
        Duration::from_secs(60),
        "version 2 and the stale group counted",
        || {
            let m = scrape();
            metric(&m, "oxrl_learner_version") == Some(2.0) && rejected(&m, "stale") == 1.0
        },
    );

    let m = scrape();
    for (reason, n) in [
        ("bad_logprob", 2.0),
        ("bad_reward", 2.0),
        ("duplicate_group", 1.0),
        ("oversized", 1.0),
        ("stale", 1.0),
    ] {
        assert_eq!(rejected(&m, reason), n, "{reason}:\n{m}");
    }
    assert_eq!(
        metric(&m, "oxrl_learner_groups_accepted_total"),
        Some(3.0),
        "{m}"
    );
    // Trained: a, then fresh; never the stale one, never anything twice.
    let trained = trained_group_ids(&out);
    assert_eq!(
        trained.iter().filter(|g| *g == "a").count(),
        1,
        "{trained:?}"
    );
    assert!(trained.contains(&"fresh".to_string()), "{trained:?}");
    learner.stop();
    coord.stop();
}

#[test]
fn a_malformed_or_unknown_coordinator_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expect) in [
        ("steps = \"many\"\n", "steps"),
        ("stepz = 10\n", "stepz"),
        ("[pipeline]\nactorz = 2\n", "actorz"),
    ] {
        let cfg = dir.path().join("run.toml");
        std::fs::write(&cfg, text).unwrap();
        let out = common::oxrl_unchecked(&[
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--config",
            cfg.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{text:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("run.toml") && err.contains(expect),
            "{text:?}: {err}"
        );
    }
}
