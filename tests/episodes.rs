//! Multi-turn episodes through `oxrl run` as a user runs them: guess-the-number in the
//! synchronous loop (a built-in), the pipeline against `oxrl env serve` over gRPC (with the
//! token the run and the server share), and that server killed mid-run and restarted, or hung
//! (SIGSTOP) and resumed: its groups dropped and counted with the reason, never scored zero,
//! and the run finishes.

mod common;

use common::{read_jsonl, RoleProcess};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A small guess-the-number run: ranges of 8, up to 6 guesses of at most 3 tokens.
fn config(extra: &str) -> String {
    format!(
        r#"
task = "guess:3"
steps = {{steps}}
prompts_per_step = 4
group_size = 4
eval_every = 0
eval_n = 8
eval_samples = 1
checkpoint_every = 0
train_size = 0

[sampling]
max_new_tokens = 3

[pipeline]
actors = 1
prompts_per_lease = 4

[episode]
env = "guess"
max_turns = 6
max_tokens = 40
{extra}
"#
    )
}

/// The token the remote-environment test's server and run share (`oxrl run` hands its own
/// `OXRL_AUTH_TOKEN` to its roles, which dial the environment with it).
const TOKEN: &str = "episodes-test-token-7";

fn spawn_run(dir: &Path, config: &str, steps: u64, args: &[&str]) -> (Child, std::path::PathBuf) {
    let path = dir.join("run.toml");
    std::fs::write(&path, config.replace("{steps}", &steps.to_string())).unwrap();
    let run = dir.join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_oxrl"))
        .args(["run", "--config", path.to_str().unwrap(), "--out"])
        .arg(&run)
        .args(args)
        .env("RUST_LOG", "info")
        .env("OXRL_AUTH_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("oxrl-run.log")).unwrap())
        .spawn()
        .expect("the oxrl binary starts");
    (child, run)
}

/// Waits until the run has trained two steps.
fn wait_two_steps(run: &Path) {
    common::wait_until(Duration::from_secs(240), "two steps trained", || {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .map(|t| t.lines().count() >= 2)
            .unwrap_or(false)
    });
}

/// The pipeline's actor's log so far (empty before it exists).
fn actor_log(run: &Path) -> String {
    std::fs::read_to_string(run.join("logs/actor-0.log")).unwrap_or_default()
}

/// Every step trained multi-turn episodes: more than one turn on average and environment
/// tokens that were received but not counted as trained tokens.
fn assert_multi_turn(run: &Path, steps: usize) {
    let lines = read_jsonl(&run.join("metrics.jsonl"));
    assert_eq!(lines.len(), steps, "{lines:?}");
    for l in &lines {
        assert!(l["turns_mean"].as_f64().unwrap() > 1.0, "{l}");
        assert!(l["env_tokens"].as_u64().unwrap() > 0, "{l}");
    }
}

#[test]
fn guess_the_number_trains_in_the_synchronous_loop() {
    let dir = tempfile::tempdir().unwrap();
    let (child, run) = spawn_run(dir.path(), &config(""), 3, &["--sync"]);
    common::wait_run_ok(
        child,
        &dir.path().join("oxrl-run.log"),
        &run,
        Duration::from_secs(300),
    );
    assert_multi_turn(&run, 3);
}

#[test]
fn a_checkpoint_with_a_chat_template_plays_its_episodes_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    common::write_checkpoint(&model, true, 5);
    // A ChatML-like template of plain characters (the test checkpoint's tokenizer is the
    // character-level one): each environment answer comes as "\n<user>ANSWER\n<assistant>".
    let template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token if m.role == 'assistant' else '' }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";
    let tokenizer_config = serde_json::json!({ "chat_template": template, "eos_token": "</s>" });
    let written = serde_json::to_string_pretty(&tokenizer_config).unwrap();
    std::fs::write(model.join("tokenizer_config.json"), &written).unwrap();
    let cfg = format!(
        "model = {:?}\n{}",
        model.to_str().unwrap(),
        config("system_prompt = \"Find it.\"").replace("max_tokens = 40", "max_tokens = 400")
    );
    let (child, run) = spawn_run(dir.path(), &cfg, 2, &["--sync"]);
    common::wait_run_ok(
        child,
        &dir.path().join("oxrl-run.log"),
        &run,
        Duration::from_secs(300),
    );
    // Each answer is " hi:", " lo:" or " ?:" in plain text (3-4 tokens); in the template it
    // comes with its markers (at least 20 tokens): the episodes were played in the template.
    let lines = read_jsonl(&run.join("metrics.jsonl"));
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let samples = l["samples"].as_f64().unwrap();
        let replies = samples * (l["turns_mean"].as_f64().unwrap() - 1.0);
        assert!(replies > 0.0, "{l}");
        let per_reply = l["env_tokens"].as_f64().unwrap() / replies;
        assert!(
            per_reply >= 20.0,
            "{per_reply} environment tokens per answer: {l}"
        );
    }
    // The trained checkpoint keeps the template, byte for byte.
    let kept = std::fs::read_to_string(run.join("final/tokenizer_config.json")).unwrap();
    assert_eq!(kept, written);
}

fn env_server(dir: &Path, listen: &str) -> RoleProcess {
    RoleProcess::start_with_env(
        &["env", "serve", "--builtin", "guess", "--listen", listen],
        &[("OXRL_AUTH_TOKEN", TOKEN)],
        &dir.join(format!("env-{}.log", listen.replace(':', "_"))),
        true,
    )
}

#[test]
fn the_pipeline_plays_a_remote_environment_and_rides_out_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = env_server(dir.path(), &listen);
    let url = format!("http://{listen}");
    let cfg = config(&format!("url = \"{url}\"\nattempts = 2\ntimeout_ms = 2000"));
    // Enough steps that the run is still going when the server dies (about 0.25 s a step).
    let steps = 60;
    let (child, run) = spawn_run(dir.path(), &cfg, steps, &[]);
    // Wait for two trained steps, then take the environment away for long enough that the
    // actor's attempts run out, then bring it back on the same address.
    wait_two_steps(&run);
    drop(server); // SIGKILL
    let actor_log = || actor_log(&run);
    common::wait_until(Duration::from_secs(120), "a group dropped", || {
        actor_log().contains("dropped a group: its environment failed")
    });
    let _server = env_server(dir.path(), &listen);
    common::wait_run_ok(
        child,
        &dir.path().join("oxrl-run.log"),
        &run,
        Duration::from_secs(400),
    );
    assert_multi_turn(&run, steps as usize);
    let log = actor_log();
    assert!(
        log.contains("env_unavailable") || log.contains("env_invalid"),
        "the drop says why:\n{log}"
    );
}

/// Sends `signal` (`-STOP`, `-CONT`) to `pid`.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}");
}

#[test]
fn a_hung_environment_server_times_out_its_groups_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = env_server(dir.path(), &listen);
    let cfg = config(&format!(
        "url = \"http://{listen}\"\nattempts = 2\ntimeout_ms = 1000"
    ));
    let steps = 60;
    let (child, run) = spawn_run(dir.path(), &cfg, steps, &[]);
    wait_two_steps(&run);
    // Hung: the server still holds its port and its sessions, and answers nothing.
    let pid = server.child.id();
    signal(pid, "-STOP");
    let actor_log = || actor_log(&run);
    common::wait_until(
        Duration::from_secs(120),
        "a group dropped for a timeout",
        || actor_log().contains("env_timeout"),
    );
    signal(pid, "-CONT");
    common::wait_run_ok(
        child,
        &dir.path().join("oxrl-run.log"),
        &run,
        Duration::from_secs(400),
    );
    assert_multi_turn(&run, steps as usize);
    drop(server);
}
