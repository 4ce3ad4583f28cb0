//! The learner's and the actor's Prometheus `/metrics` (`--metrics-listen`), scraped over
//! HTTP while a pipeline runs: the figures are real (versions advance, the lag histogram
//! accounts for every trained token, pushed groups count) and refused groups count by reason.

mod common;

use common::{
    http_get, metric, push_acks, start_coordinator, start_learner, two_sample_group, wait_until,
    write_run_config, RoleProcess,
};
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

#[test]
fn learner_and_actor_metrics_report_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // More steps than the test waits for: the roles are still up when they are scraped.
    let cfg = write_run_config(
        d,
        "steps = 1000\nprompts_per_step = 4\ngroup_size = 4\neval_every = 0\ncheckpoint_every = 0\n\
         [pipeline]\nprompts_per_lease = 4\nheartbeat_interval_ms = 100\nlearner_queue = 8\n",
    );
    let coord = start_coordinator(d, &cfg, &[]);
    let url = coord.url();
    let mut learner = start_learner(
        d,
        &url,
        &d.join("run"),
        &["--metrics-listen", "127.0.0.1:0"],
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
    let mut nan = two_sample_group("nan", "lease-1", "p", 0);
    nan.samples[0].logprobs[1] = f32::NAN;
    let bogus = two_sample_group("bogus", "lease-999999", "p", 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let acks = rt.block_on(push_acks(&learner.url(), vec![nan, bogus]));
    let outcomes: Vec<i32> = acks.unwrap().iter().map(|a| a.outcome).collect();
    let refused = proto::push_ack::Outcome::Rejected as i32;
    assert_eq!(outcomes, vec![refused, refused]);
    assert_eq!(rejected("bad_logprob"), nan_before + 1.0);
    assert_eq!(rejected("unknown_lease"), lease_before + 1.0);

    actor.stop();
    learner.stop();
    coord.stop();
}
