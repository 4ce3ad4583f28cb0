//! `oxrl bench load` in miniature: a few simulated actors for a few seconds against a real
//! coordinator and learner lose nothing, duplicate nothing and see no error.

mod common;

use common::oxrl;

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
    let last = text.lines().last().expect("a JSON line");
    let r: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
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
