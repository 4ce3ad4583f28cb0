//! `oxrl eval` with several samplers: one table, one JSON report with a row per sampler, on
//! the same problems.

mod common;

use common::{last_json, oxrl, oxrl_unchecked};

#[test]
fn eval_compares_samplers_side_by_side_in_one_json_report() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("eval.json");
    let out = oxrl(&[
        "eval",
        "--task",
        "addition:2",
        "--n",
        "6",
        "--sampler",
        "greedy",
        "--sampler",
        "majority:4",
        "--k",
        "1,2",
        "--json",
        json_path.to_str().unwrap(),
    ]);
    let json = last_json(&out);
    assert_eq!(json["model"], "default");
    assert_eq!(json["task"], "addition-2");
    assert_eq!(json["n"], 6);
    assert!(json["wall_s"].as_f64().unwrap() >= 0.0);
    let rows = json["samplers"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let (greedy, majority) = (&rows[0], &rows[1]);
    assert_eq!(greedy["sampler"], "greedy");
    assert_eq!(majority["sampler"], "majority:4");
    assert_eq!(greedy["samples_per_problem"], 1);
    assert_eq!(majority["samples_per_problem"], 4);
    for row in rows {
        assert_eq!(row["n"], 6);
        assert_eq!(row["upper_bound"], false);
        let accuracy = row["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&accuracy), "{row}");
        assert!(row["tokens"].as_u64().unwrap() > 0);
        assert!(row["wall_s"].as_f64().unwrap() >= 0.0);
        assert!(!row["examples"].as_array().unwrap().is_empty());
    }
    // pass@k only for k up to the samples drawn.
    let keys = |row: &serde_json::Value| -> Vec<String> {
        row["pass_at_k"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(keys(greedy), vec!["1"]);
    assert_eq!(keys(majority), vec!["1", "2"]);
    assert_eq!(greedy["pass_at_k"]["1"], greedy["accuracy"]);
    // Majority draws 4 samples per problem; greedy one.
    assert!(majority["tokens"].as_u64().unwrap() > greedy["tokens"].as_u64().unwrap());

    // Greedy agrees with the library's greedy evaluation, which training uses.
    let m = policy::default_model::embedded().unwrap();
    let source = tasks::from_spec("addition:2", 0, &tasks::VerifierRegistry::new()).unwrap();
    let r = rollout::greedy_eval(
        &m.policy().unwrap(),
        &m.tokenizer,
        source.as_ref(),
        &rollout::Episodes::single(source.verifier()),
        6,
        32,
        &m.eos_ids(),
    )
    .unwrap();
    assert_eq!(greedy["accuracy"].as_f64().unwrap(), r.pass_rate);
    assert_eq!(greedy["tokens"].as_u64().unwrap() as usize, r.tokens);

    // The table names every sampler; --json holds the same report.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("majority:4") && text.contains("pass@2"),
        "{text}"
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(written, json);
}

#[test]
fn eval_reads_a_dataset_runs_beam_and_power_and_rejects_bad_samplers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sums.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"12+34=\", \"answer\": \"46\"}\n{\"prompt\": \"5+5=\", \"answer\": 10}\n\
         {\"prompt\": \"40+2=\", \"answer\": \"42\"}\n",
    )
    .unwrap();
    let spec = format!("{}@exact", data.display());
    let out = oxrl(&[
        "eval",
        "--data",
        &spec,
        "--n",
        "10",
        "--sampler",
        "beam:2,power",
        "--mcmc-steps",
        "2",
        "--max-new-tokens",
        "6",
    ]);
    let json = last_json(&out);
    assert_eq!(json["task"], "sums");
    assert_eq!(json["n"], 3, "n is capped at the dataset's size");
    let rows = json["samplers"].as_array().unwrap();
    assert_eq!(rows[0]["sampler"], "beam:2");
    assert_eq!(rows[1]["sampler"], "power");
    let rate = rows[1]["acceptance_rate"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&rate));
    assert!(rows[0].get("acceptance_rate").is_none());

    let bad = oxrl_unchecked(&["eval", "--sampler", "beam", "--n", "1"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("needs a count") && err.contains("best-of:N"),
        "{err}"
    );
}

#[test]
fn per_prompt_optimization_is_a_sampler_with_its_cost_and_no_steps_is_greedy() {
    let out = oxrl(&[
        "eval",
        "--task",
        "addition:2",
        "--n",
        "6",
        "--max-new-tokens",
        "12",
        "--sampler",
        "greedy,per-prompt:4,0",
        "--sampler",
        "per-prompt:4,2",
    ]);
    let json = last_json(&out);
    let rows = json["samplers"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["sampler"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["greedy", "per-prompt:4,0", "per-prompt:4,2"]);
    let (greedy, no_steps, two_steps) = (&rows[0], &rows[1], &rows[2]);
    // No steps: the greedy answers of the model's own weights, problem by problem.
    assert_eq!(no_steps["accuracy"], greedy["accuracy"]);
    assert_eq!(no_steps["tokens"], greedy["tokens"]);
    assert_eq!(no_steps["examples"], greedy["examples"]);
    assert_eq!(no_steps["samples_per_problem"], 1);
    // Two steps of 4 samples per problem, each at least one token, and the answer: its cost
    // counts them all.
    assert_eq!(two_steps["samples_per_problem"], 9);
    let tokens = two_steps["tokens"].as_u64().unwrap();
    assert!(tokens >= 6 * (2 * 4 + 1), "{two_steps}");
    assert!(tokens > greedy["tokens"].as_u64().unwrap());
    assert!(two_steps["wall_s"].as_f64().unwrap() > 0.0);
    let accuracy = two_steps["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy));
    assert_eq!(keys_of(two_steps), ["1"]);

    let help = oxrl(&["eval", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("per-prompt:N,STEPS") && help.contains("--per-prompt-lr"),
        "{help}"
    );
    for (spec, reason) in [
        ("per-prompt:8", "needs N samples per step and STEPS"),
        ("per-prompt:0,1", "must be >= 2"),
    ] {
        let bad = oxrl_unchecked(&["eval", "--sampler", spec, "--n", "1"]);
        assert!(!bad.status.success());
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(
            err.contains(reason) && err.contains("per-prompt:N,STEPS"),
            "{spec}: {err}"
        );
    }
}

fn keys_of(row: &serde_json::Value) -> Vec<String> {
    row["pass_at_k"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}
