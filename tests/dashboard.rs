//! The coordinator's metrics and live dashboard on a real run: `/metrics` and `/api/status`
//! reflect what the learner did (checked against its `metrics.jsonl`), and the page, loaded in
//! headless Chromium when it is installed, draws the run's data. `oxrl run` prints the
//! dashboard's URL.
//!
//! `OXRL_DASHBOARD_SCREENSHOT=path.png` keeps the browser's screenshot of the page there;
//! `OXRL_CHROMIUM` names another browser binary than `/usr/bin/chromium` (one that does not
//! exist skips the browser part, as a missing Chromium does).

mod common;

use common::{
    http_get_response, oxrl, read_jsonl, start_actor, start_coordinator, start_learner, wait_until,
    write_run_config, RoleProcess,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STEPS: u64 = 8;

fn write_config(dir: &Path) -> PathBuf {
    let text = format!(
        "steps = {STEPS}\nprompts_per_step = 8\ngroup_size = 4\neval_every = 0\ncheckpoint_every = 0\n\
         [pipeline]\nprompts_per_lease = 4\nheartbeat_interval_ms = 100\n"
    );
    write_run_config(dir, &text)
}

/// `GET path` over HTTP/1.1: the status code and the body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let (head, body) = http_get_response(addr, path);
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status code in {head}"));
    (code, body)
}

fn api_status(addr: &str) -> serde_json::Value {
    let (code, body) = http_get(addr, "/api/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The value of the unlabelled sample `name` in Prometheus text.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
        .parse()
        .unwrap()
}

fn numbers(value: &serde_json::Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{value} is not an array"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[test]
fn the_dashboard_and_metrics_show_a_real_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(d);
    let run = d.join("run");
    let mut coordinator = start_coordinator(d, &config, &["--metrics-listen", "127.0.0.1:0"]);
    let url = coordinator.url();
    let http = coordinator.metrics_addr();

    // Served from the start, before any member joins.
    let (code, page) = http_get(&http, "/");
    assert_eq!(code, 200);
    assert!(page.contains("id=\"chart-reward\""), "{page}");
    assert_eq!(api_status(&http)["steps"]["step"], serde_json::json!([]));

    let mut learner = start_learner(d, &url, &run, &[]);
    let _actors: Vec<RoleProcess> = (0..2)
        .map(|i| start_actor(&url, &format!("actor-{i}"), &d.join(format!("a{i}.log"))))
        .collect();
    let finished = learner
        .wait(Duration::from_secs(180))
        .unwrap_or_else(|| panic!("the run did not finish; see {}", d.join("l.log").display()));
    assert!(finished.success(), "see {}", d.join("l.log").display());
    wait_until(
        Duration::from_secs(10),
        "the coordinator to see every step",
        || {
            let status = api_status(&http);
            status["done"] == true
                && status["steps"]["step"].as_array().unwrap().len() == STEPS as usize
        },
    );

    let lines = read_jsonl(&run.join("metrics.jsonl"));
    assert_eq!(lines.len(), STEPS as usize);
    let last_version = lines.last().unwrap()["version"].as_u64().unwrap();
    let trained: u64 = lines.iter().map(|l| l["tokens"].as_u64().unwrap()).sum();
    assert!(last_version > 0 && trained > 0);

    // /api/status: every step as the learner logged it.
    let status = api_status(&http);
    assert_eq!(status["learner_version"], last_version);
    assert_eq!(status["step"], STEPS);
    let steps = &status["steps"];
    assert_eq!(
        numbers(&steps["step"]),
        (1..=STEPS).map(|s| s as f64).collect::<Vec<_>>()
    );
    for (i, line) in lines.iter().enumerate() {
        for field in ["reward_mean", "pass_rate"] {
            let logged = line[field].as_f64().unwrap();
            let shown = steps[field][i].as_f64().unwrap();
            assert!(
                (logged - shown).abs() < 1e-9,
                "step {}: {field} {logged} vs {shown}",
                i + 1
            );
        }
        assert_eq!(steps["max_lag"][i], line["lag_max"], "step {}", i + 1);
        assert_eq!(steps["tokens"][i], line["tokens"], "step {}", i + 1);
    }
    let lag_tokens = numbers(&status["lag_tokens"]);
    assert_eq!(lag_tokens.iter().sum::<f64>(), trained as f64);
    let k = status["max_lag"].as_u64().unwrap();
    assert!(
        lag_tokens.len() as u64 <= k + 1,
        "a lag past k: {lag_tokens:?}"
    );
    let actors = status["actors"].as_array().unwrap();
    let mut names: Vec<&str> = actors.iter().map(|a| a["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["actor-0", "actor-1"]);
    assert!(
        actors.iter().all(|a| a["version"].as_u64().unwrap() > 0),
        "{actors:?}"
    );
    assert!(status["prompts_completed"].as_u64().unwrap() >= STEPS * 8);

    // /metrics: the same run in Prometheus text.
    let (code, metrics) = http_get(&http, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        sample(&metrics, "oxrl_learner_version"),
        last_version as f64
    );
    assert_eq!(sample(&metrics, "oxrl_learner_step"), STEPS as f64);
    assert_eq!(sample(&metrics, "oxrl_run_done"), 1.0);
    assert_eq!(sample(&metrics, "oxrl_max_lag"), k as f64);
    assert_eq!(sample(&metrics, "oxrl_lag_tokens_count"), trained as f64);
    assert_eq!(
        sample(&metrics, "oxrl_trained_tokens_total"),
        trained as f64
    );
    assert_eq!(
        sample(&metrics, "oxrl_lag_tokens_bucket{le=\"+Inf\"}"),
        trained as f64
    );
    assert!(sample(&metrics, "oxrl_prompts_completed_total") >= (STEPS * 8) as f64);
    let last_reward = lines.last().unwrap()["reward_mean"].as_f64().unwrap();
    assert!((sample(&metrics, "oxrl_reward_mean") - last_reward).abs() < 1e-9);
    for family in [
        "oxrl_actors_alive",
        "oxrl_leases_outstanding",
        "oxrl_leases_expired_total",
        "oxrl_pool_active",
        "oxrl_pool_retired",
        "oxrl_zero_variance_groups_total",
        "oxrl_dropped_stale_groups_total",
        "oxrl_tokens_per_second",
        "oxrl_pass_rate",
        "oxrl_step_lag_max",
    ] {
        sample(&metrics, family);
    }
    // Every reason is there from the start (at 0 until something is refused).
    for reason in [
        "unknown_member",
        "stale_weights",
        "unknown_lease",
        "expired_lease",
    ] {
        sample(
            &metrics,
            &format!("oxrl_rejected_total{{reason=\"{reason}\"}}"),
        );
    }
    assert_eq!(
        sample(&metrics, "oxrl_rejected_total{reason=\"invalid_request\"}"),
        0.0
    );

    browser_check(&http, &status, d);
}

#[test]
fn oxrl_run_prints_the_dashboard_url() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = oxrl(&[
        "run",
        "--out",
        run.to_str().unwrap(),
        "--steps",
        "2",
        "--prompts-per-step",
        "4",
        "--group-size",
        "2",
        "--eval-every",
        "0",
        "--actors",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let url = stdout
        .lines()
        .find_map(|l| l.strip_prefix("dashboard: "))
        .unwrap_or_else(|| panic!("no dashboard line in\n{stdout}"));
    let (port, token) = url
        .strip_prefix("http://127.0.0.1:")
        .and_then(|rest| rest.split_once("/#token="))
        .unwrap_or_else(|| panic!("{url} is not http://127.0.0.1:PORT/#token=TOKEN"));
    assert!(port.parse::<u16>().unwrap() > 0, "{url}");
    assert_eq!(token.len(), 64, "the run's random token: {url}");
}

/// The browser to drive, if one is installed.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("OXRL_CHROMIUM") {
        return Some(PathBuf::from(path)).filter(|p| p.exists());
    }
    let default = PathBuf::from("/usr/bin/chromium");
    if default.exists() {
        return Some(default);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.exists())
    })
}

/// Runs headless Chromium on `url` with `mode` (`--dump-dom` or `--screenshot=...`) in a
/// fresh profile; returns its stdout.
fn headless(browser: &Path, url: &str, mode: &[String], dir: &Path) -> String {
    let profile = tempfile::tempdir_in(dir).unwrap();
    let out_path = dir.join("chromium.out");
    let err_path = dir.join("chromium.err");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(mode)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("chromium starts");
    let until = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish in 90 s; see {}",
                err_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        status.success(),
        "chromium {mode:?} failed ({status}):\n{err}"
    );
    std::fs::read_to_string(&out_path).unwrap()
}

/// The opening tag of the element with `id` in `dom`.
fn tag_with_id<'d>(dom: &'d str, id: &str) -> &'d str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the DOM"));
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    &dom[start..=end]
}

/// The value of attribute `name` in an opening tag.
fn attr<'t>(tag: &'t str, name: &str) -> &'t str {
    let key = format!(" {name}=\"");
    let at = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    &tag[at..at + tag[at..].find('"').unwrap()]
}

/// The text right after the opening tag of `#id`.
fn text_of<'d>(dom: &'d str, id: &str) -> &'d str {
    let tag = tag_with_id(dom, id);
    let start = dom.find(tag).unwrap() + tag.len();
    &dom[start..start + dom[start..].find('<').unwrap()]
}

/// Loads the page in headless Chromium and checks the charts carry the run's data; then
/// takes a screenshot.
fn browser_check(http: &str, status: &serde_json::Value, dir: &Path) {
    let Some(browser) = chromium() else {
        println!("browser check skipped: chromium not found (apt-get install chromium)");
        return;
    };
    let url = format!("http://{http}/");
    let dom = headless(&browser, &url, &["--dump-dom".to_string()], dir);
    let steps = status["steps"]["step"].as_array().unwrap().len();
    assert!(steps > 0);
    for chart in [
        "chart-reward",
        "chart-tokens",
        "chart-max-lag",
        "chart-pool",
    ] {
        let tag = tag_with_id(&dom, chart);
        assert_eq!(attr(tag, "data-points"), steps.to_string(), "{tag}");
    }
    let reward = dom
        .split('<')
        .find(|t| t.starts_with("polyline") && t.contains("data-series=\"reward_mean\""))
        .expect("a reward polyline");
    assert_eq!(attr(reward, "data-points"), steps.to_string(), "{reward}");
    let last_reward: f64 = attr(reward, "data-last").parse().unwrap();
    let api_reward = status["steps"]["reward_mean"][steps - 1].as_f64().unwrap();
    assert!(
        (last_reward - api_reward).abs() < 1e-9,
        "{last_reward} vs {api_reward}"
    );

    let lag = tag_with_id(&dom, "chart-lag-hist");
    let total: f64 = numbers(&status["lag_tokens"]).iter().sum();
    assert!(total > 0.0);
    assert_eq!(attr(lag, "data-total"), format!("{total}"), "{lag}");
    let k = status["max_lag"].as_u64().unwrap() as usize;
    assert!(
        attr(lag, "data-points").parse::<usize>().unwrap() > k,
        "{lag}"
    );
    assert!(
        dom.matches("class=\"bar\"").count() > k,
        "one bar per lag 0..=k"
    );

    assert_eq!(
        text_of(&dom, "stat-version"),
        status["learner_version"].to_string()
    );
    assert_eq!(text_of(&dom, "stat-step"), status["step"].to_string());
    assert_eq!(text_of(&dom, "stat-state"), "done");
    assert_eq!(
        dom.matches("data-member=\"").count(),
        status["actors"].as_array().unwrap().len()
    );
    assert_eq!(
        text_of(&dom, "pool-retired"),
        status["pool"]["retired"].to_string()
    );

    let png = dir.join("dashboard.png");
    headless(
        &browser,
        &url,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,900".to_string(),
        ],
        dir,
    );
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        bytes.len() > 20_000,
        "a {} byte screenshot shows no charts",
        bytes.len()
    );
    if let Some(keep) = std::env::var_os("OXRL_DASHBOARD_SCREENSHOT") {
        std::fs::copy(&png, &keep).expect("copying the screenshot");
        println!("screenshot saved to {}", PathBuf::from(keep).display());
    }
}
