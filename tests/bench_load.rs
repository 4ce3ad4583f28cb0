//! `oxrl bench load` in miniature: a few simulated actors for a few seconds against a real
//! coordinator and learner lose nothing, duplicate nothing and see no error; a sweep of
//! sizes prints one JSON line and one table row per size, with each server's CPU cost.

mod common;

use common::oxrl;

/// The JSON lines of a run's output, in order.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a line starting with { is JSON"))
        .collect()
}

#[test]
fn a_short_load_run_loses_and_duplicates_nothing() {
    let out = oxrl(&[
        "bench",
        "load",
        "--actors",
        "4",
        "--seconds",
        "3",
        "--resend-every",
        "3",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines = json_lines(&text);
    assert_eq!(lines.len(), 1, "{text}");
    let r = &lines[0];
    assert_eq!(r["suite"], "load", "{text}");
    assert_eq!(r["errors"], 0, "{text}");
    assert_eq!(r["lost_groups"], 0, "{text}");
    assert_eq!(r["duplicated_groups"], 0, "{text}");
    assert!(r["groups_per_s"].as_f64().unwrap() > 0.0, "{text}");
    assert!(r["groups_trained"].as_u64().unwrap() > 0, "{text}");
    // Copies were pushed on purpose, and every one came back as a duplicate.
    let resent = r["resent_groups"].as_u64().unwrap();
    assert!(resent > 0, "{text}");
    assert_eq!(
        r["resent_acked_duplicate"].as_u64().unwrap(),
        resent,
        "{text}"
    );
    assert!(r["clean_exit"].as_bool().unwrap(), "{text}");
}

#[test]
fn a_sweep_reports_each_size_with_its_cpu_costs() {
    let out = oxrl(&["bench", "load", "--actors", "2,4", "--seconds", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines = json_lines(&text);
    let sizes: Vec<u64> = lines
        .iter()
        .map(|r| r["actors"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [2, 4], "one JSON line per size, in order:\n{text}");
    for r in &lines {
        assert_eq!(r["errors"], 0, "{text}");
        assert_eq!(r["lost_groups"], 0, "{text}");
        assert!(r["leases"].as_u64().unwrap() > 0, "{text}");
        for field in [
            "leases_per_s",
            "groups_per_s",
            "heartbeats_per_s",
            "window_s",
        ] {
            assert!(r[field].as_f64().unwrap() > 0.0, "{field}: {text}");
        }
        let (p50, p99) = (
            r["lease_latency_ms_p50"].as_f64().unwrap(),
            r["lease_latency_ms_p99"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99, "{text}");
        // The learner trained, so its process used CPU, most of it in its training thread;
        // the coordinator's cost per lease and its capacity follow from its own CPU time.
        let learner = r["learner_cpu_s"].as_f64().unwrap();
        assert!(learner > 0.0, "{text}");
        assert!(
            r["learner_training_cores"].as_f64().unwrap() > 0.0,
            "{text}"
        );
        let coordinator = r["coordinator_cpu_s"].as_f64().unwrap();
        let per_lease = r["coordinator_us_per_lease"].as_f64().unwrap();
        let leases_per_s = r["leases_per_s"].as_f64().unwrap();
        let window = r["window_s"].as_f64().unwrap();
        assert!(
            (per_lease - coordinator * 1e6 / (leases_per_s * window)).abs()
                <= 1e-6 * per_lease.max(1.0),
            "{text}"
        );
        let busy = r["machine_busy_cores"].as_f64().unwrap();
        assert!(
            busy > 0.0 && busy <= r["machine_cores"].as_f64().unwrap() + 1e-6,
            "{text}"
        );
        assert!(!r["saturated"].as_array().unwrap().is_empty(), "{text}");
        assert!(
            r["journal_bytes"].as_u64().unwrap() > 0,
            "the journal is on: {text}"
        );
        assert!(
            r["coordinator_rss_mib_end"].as_f64().unwrap() > 0.0,
            "{text}"
        );
        assert!(r["learner_rss_mib_end"].as_f64().unwrap() > 0.0, "{text}");
    }
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 3, "a header and one row per size:\n{text}");
    assert!(
        rows[1].starts_with("| 2 |") && rows[2].starts_with("| 4 |"),
        "{text}"
    );
}

#[test]
fn without_pushes_only_the_coordinator_is_loaded() {
    let out = oxrl(&[
        "bench",
        "load",
        "--actors",
        "3",
        "--seconds",
        "2",
        "--no-push",
        "--no-journal",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let r = &json_lines(&text)[0];
    assert_eq!(r["pushed"], false, "{text}");
    assert_eq!(r["errors"], 0, "{text}");
    assert!(r["leases_per_s"].as_f64().unwrap() > 0.0, "{text}");
    assert_eq!(
        r["groups_accepted"], 0,
        "nothing reached the learner: {text}"
    );
    assert_eq!(r["groups_completed"], r["leases"], "{text}");
    assert_eq!(r["journal"], false, "{text}");
    assert_eq!(r["journal_bytes"], 0, "no journal was written: {text}");
}

#[test]
fn a_bad_size_is_refused_with_a_clear_error() {
    let out = common::oxrl_unchecked(&["bench", "load", "--actors", "4,0", "--seconds", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--actors must be at least 1"), "{err}");
}
