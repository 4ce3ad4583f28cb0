//! The environment server's Prometheus metrics (`oxrl env serve --metrics-listen`): sessions
//! open, resets and steps served (by environment), steps answered from the turn cache, errors
//! by reason, and the latency of a Step. Names are documented in `docs/metrics.md`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use proto::metrics_http;

/// The labels of the per-environment counters: one, `env`.
type EnvLabels = [(&'static str, String); 1];

/// The labels of `oxrl_env_errors_total`: one, `reason`.
type ReasonLabels = [(&'static str, &'static str); 1];

/// Every family the environment server exposes, and the registry that renders them.
pub struct EnvMetrics {
    registry: Registry,
    /// Mirrors the session table; set on every scrape and after every call.
    pub sessions_open: Gauge,
    pub resets: Family<EnvLabels, Counter>,
    pub steps: Family<EnvLabels, Counter>,
    pub replayed_steps: Counter,
    pub errors: Family<ReasonLabels, Counter>,
    pub step_seconds: Histogram,
    pub reaped: Counter,
}

impl Default for EnvMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl EnvMetrics {
    /// Registers every family (all at zero).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = EnvMetrics {
            sessions_open: Gauge::default(),
            resets: Family::default(),
            steps: Family::default(),
            replayed_steps: Counter::default(),
            errors: Family::default(),
            // 0.1 ms to about 3 s: built-ins answer in microseconds, a served game may think.
            step_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            reaped: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "oxrl_env_sessions_open",
            "Episodes reset and not yet done, closed or idled out",
            m.sessions_open.clone(),
        );
        r.register(
            "oxrl_env_resets",
            "Sessions opened (Reset answered), by environment",
            m.resets.clone(),
        );
        r.register(
            "oxrl_env_steps",
            "Model turns the environment answered (Step), by environment",
            m.steps.clone(),
        );
        r.register(
            "oxrl_env_replayed_steps",
            "Retried Steps answered from the turn cache without stepping again",
            m.replayed_steps.clone(),
        );
        r.register(
            "oxrl_env_errors",
            "Calls refused or failed, by reason",
            m.errors.clone(),
        );
        r.register(
            "oxrl_env_step_seconds",
            "Wall time of a Step call on the server",
            m.step_seconds.clone(),
        );
        r.register(
            "oxrl_env_reaped_sessions",
            "Sessions forgotten after sitting idle past the TTL",
            m.reaped.clone(),
        );
        EnvMetrics { registry, ..m }
    }

    /// Counts one failed call for `reason`.
    pub fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&[("reason", reason)]).inc();
    }

    /// The registry in the OpenMetrics text format.
    pub fn render(&self) -> String {
        metrics_http::render(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_their_labels() {
        let m = EnvMetrics::new();
        m.steps.get_or_create(&[("env", "guess".to_string())]).inc();
        m.error("unknown_session");
        m.sessions_open.set(3);
        m.step_seconds.observe(0.002);
        let text = m.render();
        for want in [
            "oxrl_env_steps_total{env=\"guess\"} 1",
            "oxrl_env_errors_total{reason=\"unknown_session\"} 1",
            "oxrl_env_sessions_open 3",
            "oxrl_env_step_seconds_count 1",
            "oxrl_env_replayed_steps_total 0",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }
}
