//! The coordinator's HTTP side (docs/dashboard.md): `GET /metrics` (Prometheus, `metrics.rs`),
//! `GET /` the live dashboard (one self-contained page, `dashboard.html`: inline JS drawing
//! SVG, no external scripts) and `GET /api/status`, the JSON the page polls, with everything
//! it draws.

use std::collections::BTreeMap;

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use tokio::net::TcpListener;

use proto::metrics_http::Guarded;
use proto::transport::{Security, TransportError};

use crate::handle::Coordinator;
use crate::history::{RunView, HISTORY_STEPS};

/// The dashboard page.
const PAGE: &str = include_str!("dashboard.html");

/// `/metrics`, `/`, `/api/status` and `/healthz` for `coordinator` on `listener`, behind
/// `security`'s token and TLS (`proto::http_guard`), ready to serve.
pub fn guarded_http(
    coordinator: Coordinator,
    listener: TcpListener,
    security: &Security,
) -> Result<Guarded, TransportError> {
    Guarded::new(listener, router(coordinator), security)
}

/// The routes, for `serve_http` and tests.
pub(crate) fn router(coordinator: Coordinator) -> Router {
    let scrape = coordinator.clone();
    proto::metrics_http::metrics_router(move || {
        // After a journal failure the state answers nothing more: the last values stand
        // (the server is stopping anyway).
        let view = scrape.view().ok();
        scrape.metrics().render(view.as_ref())
    })
    .route("/", get(|| async { Html(PAGE) }))
    .route(
        "/api/status",
        get(move || {
            let coordinator = coordinator.clone();
            async move { api_status(&coordinator) }
        }),
    )
}

fn api_status(coordinator: &Coordinator) -> Response {
    match coordinator.view() {
        Ok(view) => {
            let status = ApiStatus::new(&view, coordinator.metrics().rejections());
            // Serialising plain numbers and strings cannot fail.
            let body = serde_json::to_string(&status).expect("status serialises");
            (
                [
                    (CONTENT_TYPE, "application/json"),
                    (CACHE_CONTROL, "no-store"),
                ],
                body,
            )
                .into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// `GET /api/status`. Step series are columns (one array per field, oldest step first), so
/// two thousand steps stay a small answer to poll every second.
#[derive(Debug, Serialize)]
pub(crate) struct ApiStatus {
    learner_version: u64,
    /// The latest step reported (0 before the first).
    step: u64,
    /// k, the lag bound.
    max_lag: u64,
    done: bool,
    prompts_completed: u64,
    leases_outstanding: u64,
    leases_expired: u64,
    pool: PoolStatus,
    actors: Vec<ActorStatus>,
    steps: StepSeries,
    /// Trained tokens by lag (index = versions of lag), over every reported step.
    lag_tokens: Vec<u64>,
    totals: Totals,
    /// `oxrl_rejected_total` by reason.
    rejected: BTreeMap<&'static str, u64>,
    /// How many steps `steps` keeps at most.
    history_limit: usize,
}

#[derive(Debug, Serialize)]
struct PoolStatus {
    active: u64,
    retired: u64,
    zero_variance_groups: u64,
    /// The train pool's size; null for an unbounded source.
    size: Option<u64>,
    /// Passes over the pool completed, and configured (0: no limit).
    epoch: u64,
    epochs: u64,
    /// The pool is spent: no more rollouts.
    exhausted: bool,
}

#[derive(Debug, Serialize)]
struct ActorStatus {
    member_id: String,
    name: String,
    version: u64,
    last_heartbeat_ms_ago: u64,
    alive: bool,
    /// Environment calls, mean seconds per call, groups dropped by reason.
    env_calls: u64,
    env_call_seconds: f64,
    env_errors: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
struct StepSeries {
    step: Vec<u64>,
    version: Vec<u64>,
    reward_mean: Vec<f64>,
    pass_rate: Vec<f64>,
    tokens_per_s: Vec<f64>,
    step_seconds: Vec<f64>,
    max_lag: Vec<u64>,
    tokens: Vec<u64>,
    dropped_stale: Vec<u64>,
    zero_variance_groups: Vec<u64>,
    wall_s: Vec<f64>,
    turns_mean: Vec<f64>,
    pool_active: Vec<u64>,
    pool_retired: Vec<u64>,
}

#[derive(Debug, Serialize)]
struct Totals {
    steps: u64,
    tokens: u64,
    dropped_stale: u64,
    zero_variance_groups: u64,
}

impl ApiStatus {
    fn new(view: &RunView, rejected: Vec<(&'static str, u64)>) -> Self {
        let status = &view.status;
        let mut steps = StepSeries::default();
        for p in &view.steps {
            steps.step.push(p.step);
            steps.version.push(p.version);
            steps.reward_mean.push(p.reward_mean);
            steps.pass_rate.push(p.pass_rate);
            steps.tokens_per_s.push(p.tokens_per_s);
            steps.step_seconds.push(p.step_seconds);
            steps.max_lag.push(p.max_lag);
            steps.tokens.push(p.tokens);
            steps.dropped_stale.push(p.dropped_stale);
            steps.zero_variance_groups.push(p.zero_variance_groups);
            steps.wall_s.push(p.wall_s);
            steps.turns_mean.push(p.turns_mean);
            steps.pool_active.push(p.pool_active);
            steps.pool_retired.push(p.pool_retired);
        }
        ApiStatus {
            learner_version: status.learner_version,
            step: view.steps.last().map_or(0, |p| p.step),
            max_lag: status.max_lag,
            done: status.done,
            prompts_completed: status.prompts_completed,
            leases_outstanding: status.leases_outstanding,
            leases_expired: status.leases_expired,
            pool: PoolStatus {
                active: status.pool_active,
                retired: status.pool_retired,
                zero_variance_groups: status.zero_variance_groups,
                size: status.pool_size,
                epoch: status.epoch,
                epochs: status.epochs,
                exhausted: status.exhausted,
            },
            actors: status
                .actors
                .iter()
                .map(|a| ActorStatus {
                    member_id: a.member_id.clone(),
                    name: a.name.clone(),
                    version: a.version,
                    last_heartbeat_ms_ago: u64::try_from(a.since_heard.as_millis())
                        .unwrap_or(u64::MAX),
                    alive: a.alive,
                    env_calls: a.env.calls,
                    env_call_seconds: a.env.seconds / a.env.calls.max(1) as f64,
                    env_errors: a.env.errors.clone(),
                })
                .collect(),
            steps,
            lag_tokens: view.totals.lag_tokens.clone(),
            totals: Totals {
                steps: view.totals.steps,
                tokens: view.totals.tokens,
                dropped_stale: view.totals.dropped_stale,
                zero_variance_groups: view.totals.zero_variance_groups,
            },
            rejected: rejected.into_iter().collect(),
            history_limit: HISTORY_STEPS,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    use super::*;
    use crate::domain::{LeaseRequest, MemberRole, Publication, Registration, StepStats};
    use crate::pool::tests::FixedSource;

    async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        (head.to_string(), body.to_string())
    }

    fn step(step: u64) -> StepStats {
        StepStats {
            step,
            reward_mean: 0.5 + step as f64 / 100.0,
            pass_rate: 0.25,
            tokens_per_s: 800.0,
            step_seconds: 0.3,
            lag_tokens: vec![40, 8, step],
            dropped_stale: 0,
            zero_variance_groups: 1,
            tokens: 48 + step,
            wall_s: step as f64,
            turns_mean: 2.5,
        }
    }

    /// A coordinator that has seen an actor, a stale lease request and three steps.
    fn coordinator() -> Coordinator {
        let run = crate::test_run(|run| {
            run.task = "fixed".to_string();
            run.update.max_lag = 2;
        });
        let coordinator = Coordinator::from_source(run, Box::new(FixedSource { len: None }));
        let now = Instant::now();
        let actor = coordinator
            .with_state(|s| {
                s.register(
                    Registration {
                        role: MemberRole::Actor,
                        advertise_addr: String::new(),
                        name: "a0".to_string(),
                    },
                    now,
                )
                .member_id
            })
            .unwrap();
        for version in 1..=3 {
            coordinator
                .with_state(|s| {
                    s.publish_version(
                        Publication {
                            version,
                            stats: Some(step(version)),
                            ..Publication::default()
                        },
                        now,
                    )
                })
                .unwrap();
        }
        coordinator
            .with_state(|s| {
                s.lease(
                    LeaseRequest {
                        member_id: actor,
                        version: 3,
                        max_prompts: 2,
                    },
                    now,
                )
            })
            .unwrap()
            .unwrap();
        coordinator.reject(crate::metrics::Rejection::StaleWeights);
        coordinator
    }

    #[test]
    fn the_status_has_every_step_and_the_lag_totals() {
        let coordinator = coordinator();
        let view = coordinator.view().unwrap();
        let status = ApiStatus::new(&view, coordinator.metrics().rejections());
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["learner_version"], 3);
        assert_eq!(json["step"], 3);
        assert_eq!(json["steps"]["step"], serde_json::json!([1, 2, 3]));
        assert_eq!(
            json["steps"]["reward_mean"],
            serde_json::json!([0.51, 0.52, 0.53])
        );
        assert_eq!(json["steps"]["max_lag"], serde_json::json!([2, 2, 2]));
        assert_eq!(json["lag_tokens"], serde_json::json!([120, 24, 6]));
        assert_eq!(json["totals"]["tokens"], 150);
        assert_eq!(json["leases_outstanding"], 1);
        assert_eq!(json["pool"]["epoch"], 0);
        assert_eq!(json["pool"]["size"], serde_json::Value::Null);
        assert_eq!(json["pool"]["exhausted"], false);
        assert_eq!(json["actors"][0]["name"], "a0");
        assert_eq!(json["actors"][0]["version"], 3);
        assert_eq!(json["actors"][0]["alive"], true);
        assert_eq!(json["rejected"]["stale_weights"], 1);
        assert_eq!(json["history_limit"], HISTORY_STEPS);
    }

    #[tokio::test]
    async fn serves_the_page_the_status_and_the_metrics() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let http = guarded_http(coordinator(), listener, &Security::default()).unwrap();
        let server = tokio::spawn(http.serve(async {
            let _ = stopped.await;
        }));

        let (head, page) = http_get(addr, "/").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("text/html"), "{head}");
        for id in ["chart-reward", "chart-lag-hist", "chart-max-lag", "actors"] {
            assert!(
                page.contains(&format!("id=\"{id}\"")),
                "no #{id} on the page"
            );
        }
        assert!(
            !page.contains("<script src"),
            "the page loads no external script"
        );

        let (head, body) = http_get(addr, "/api/status").await;
        assert!(head.contains("application/json"), "{head}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["steps"]["step"].as_array().unwrap().len(), 3);

        let (head, metrics) = http_get(addr, "/metrics").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        for line in [
            "oxrl_learner_version 3",
            "oxrl_leases_outstanding 1",
            "oxrl_lag_tokens_count 150",
            "oxrl_rejected_total{reason=\"stale_weights\"} 1",
        ] {
            assert!(
                metrics.lines().any(|l| l == line),
                "no {line} in\n{metrics}"
            );
        }

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stops on shutdown")
            .unwrap()
            .unwrap();
    }
}
