//! The learner's and the actor's Prometheus `/metrics` (`--metrics-listen`), scraped over
//! HTTP while a pipeline runs: the figures are real (versions advance, the lag histogram
//! accounts for every trained token, pushed groups count) and refused groups count by reason.

mod common;

use common::{http_get, metric, wait_until, RoleProcess};
use std::time::Duration;

/// The sum of every series of `family` (all label sets).
fn sum_family(text: &str, family: &str) -> f64 {
    let prefix = format!("{family}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `/metrics` of the role at `addr`.
fn scrape(addr: &str) -> String {
    http_get(addr, "/metrics")
}

/// A group for `lease` that the learner can train on; callers break it.
fn group(id: &str, lease: &str, problem: &str) -> proto::RolloutGroup {
    proto::RolloutGroup {
        group_id: id.into(),
        lease_id: lease.into(),
        problem_id: problem.into(),
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
    }
}

#[test]
fn learner_and_actor_metrics_report_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // More steps than the test waits for: the roles are still up when they are scraped.
    let cfg = d.join("run.toml");
    std::fs::write(
        &cfg,
        "steps = 1000\nprompts_per_step = 4\ngroup_size = 4\neval_every = 0\ncheckpoint_every = 0\n\
         [pipeline]\nprompts_per_lease = 4\nheartbeat_interval_ms = 100\nlearner_queue = 8\n",
    )
    .unwrap();
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
    let mut learner = RoleProcess::start(
        &[
            "learner",
            "--coordinator",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--out",
            d.join("run").to_str().unwrap(),
        ],
        &d.join("l.log"),
        true,
    );
    let lmetrics = learner.metrics_addr();
    let mut actor = RoleProcess::start(
        &[
            "actor",
            "--coordinator",
            &url,
            "--name",
            "a0",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &d.join("a.log"),
        false,
    );
    // Served from start, weights or not (Kubernetes probes it).
    let ametrics = actor.metrics_addr();
    assert!(
        metric(&scrape(&ametrics), "oxrl_actor_weights_version").is_some(),
        "the actor's /metrics answers from start"
    );

    let mut text = String::new();
    wait_until(
        Duration::from_secs(90),
        "the learner past version 2 with every trained token in the lag histogram",
        || {
            text = scrape(&lmetrics);
            let trained = metric(&text, "oxrl_learner_trained_tokens_total").unwrap_or(0.0);
            metric(&text, "oxrl_learner_version").unwrap_or(0.0) >= 2.0
                && trained > 0.0
                && sum_family(&text, "oxrl_learner_lag_tokens_total") == trained
        },
    );
    // (series, the least it must read)
    for (series, least) in [
        ("oxrl_learner_steps_total", 2.0),
        ("oxrl_learner_step_seconds_count", 2.0),
        ("oxrl_learner_tokens_per_second", f64::MIN_POSITIVE),
        ("oxrl_learner_groups_accepted_total", 8.0),
        ("oxrl_learner_weight_encode_seconds_count", 3.0),
        ("oxrl_learner_weight_sent_bytes_total", 1.0),
        ("oxrl_learner_subscribers", 1.0),
        ("oxrl_learner_lag_tokens_total{lag=\"0\"}", 1.0),
    ] {
        let value = metric(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
        assert!(value >= least, "{series} = {value}:\n{text}");
    }

    let mut text = String::new();
    wait_until(Duration::from_secs(30), "the actor's pushed groups", || {
        text = scrape(&ametrics);
        metric(&text, "oxrl_actor_groups_accepted_total").unwrap_or(0.0) > 0.0
            && metric(&text, "oxrl_actor_weights_version").unwrap_or(0.0) >= 1.0
    });
    for (series, least) in [
        ("oxrl_actor_groups_pushed_total", 1.0),
        ("oxrl_actor_leases_total", 1.0),
        ("oxrl_actor_completion_tokens_total", 1.0),
        ("oxrl_actor_decode_tokens_per_second", f64::MIN_POSITIVE),
        ("oxrl_actor_busy_seconds_total", f64::MIN_POSITIVE),
        ("oxrl_actor_weight_versions_received_total", 2.0),
        ("oxrl_actor_weight_bytes_received_total", 1.0),
        ("oxrl_actor_learner_version", 1.0),
    ] {
        let value = metric(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
        assert!(value >= least, "{series} = {value}:\n{text}");
    }
    assert_eq!(
        metric(&text, "oxrl_actor_groups_rejected_total"),
        Some(0.0),
        "{text}"
    );

    // Malformed groups count as rejections by reason.
    let rejected = |reason: &str| {
        metric(
            &scrape(&lmetrics),
            &format!("oxrl_rejected_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let (nan_before, lease_before) = (rejected("bad_logprob"), rejected("unknown_lease"));
    let mut nan = group("nan", "lease-1", "p");
    nan.samples[0].logprobs[1] = f32::NAN;
    let bogus = group("bogus", "lease-999999", "p");
    let lurl = format!("http://{}", learner.addr.clone().unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let outcomes = rt.block_on(async {
        let mut l = proto::learner_client::LearnerClient::connect(lurl)
            .await
            .unwrap();
        let mut acks = l
            .push_rollouts(tokio_stream::iter(vec![nan, bogus]))
            .await
            .unwrap()
            .into_inner();
        let mut outcomes = Vec::new();
        while let Some(a) = acks.message().await.unwrap() {
            outcomes.push(a.outcome);
        }
        outcomes
    });
    let refused = proto::push_ack::Outcome::Rejected as i32;
    assert_eq!(outcomes, vec![refused, refused]);
    assert_eq!(rejected("bad_logprob"), nan_before + 1.0);
    assert_eq!(rejected("unknown_lease"), lease_before + 1.0);

    actor.stop();
    learner.stop();
    coord.stop();
}
