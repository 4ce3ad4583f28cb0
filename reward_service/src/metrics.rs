//! The reward server's Prometheus metrics (`oxrl rm serve --metrics-listen`): requests and
//! sequences scored, forward passes with their size (requests and sequences per batch) and
//! wall time, and refused or failed requests by reason. Names are documented in
//! `docs/metrics.md`.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use proto::metrics_http;

/// The labels of `oxrl_rm_errors_total`: one, `reason`.
type ReasonLabels = [(&'static str, &'static str); 1];

/// Every family the reward server exposes, and the registry that renders them.
pub struct RmMetrics {
    registry: Registry,
    pub requests: Counter,
    pub sequences: Counter,
    pub batches: Counter,
    pub batch_requests: Histogram,
    pub batch_sequences: Histogram,
    pub forward_seconds: Histogram,
    pub errors: Family<ReasonLabels, Counter>,
}

impl Default for RmMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RmMetrics {
    /// Registers every family (all at zero).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = RmMetrics {
            registry: Registry::default(),
            requests: Counter::default(),
            sequences: Counter::default(),
            batches: Counter::default(),
            batch_requests: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            batch_sequences: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            // 0.1 ms to about 6 s.
            forward_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            errors: Family::default(),
        };
        let r = &mut registry;
        r.register(
            "oxrl_rm_requests",
            "Score requests answered with scores",
            m.requests.clone(),
        );
        r.register("oxrl_rm_sequences", "Sequences scored", m.sequences.clone());
        r.register(
            "oxrl_rm_batches",
            "Forward passes of the reward model (one per batch of requests)",
            m.batches.clone(),
        );
        r.register(
            "oxrl_rm_batch_requests",
            "Requests scored together in one forward pass",
            m.batch_requests.clone(),
        );
        r.register(
            "oxrl_rm_batch_sequences",
            "Sequences scored together in one forward pass",
            m.batch_sequences.clone(),
        );
        r.register(
            "oxrl_rm_forward_seconds",
            "Wall time of one forward pass",
            m.forward_seconds.clone(),
        );
        r.register(
            "oxrl_rm_errors",
            "Score requests refused or failed, by reason",
            m.errors.clone(),
        );
        RmMetrics { registry, ..m }
    }

    /// Records one forward pass over `requests` requests and `sequences` sequences.
    pub fn batch(&self, requests: usize, sequences: usize, took: Duration) {
        self.batches.inc();
        self.batch_requests.observe(requests as f64);
        self.batch_sequences.observe(sequences as f64);
        self.forward_seconds.observe(took.as_secs_f64());
    }

    /// Counts one refused or failed request for `reason`.
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
        let m = RmMetrics::new();
        m.batch(3, 12, Duration::from_millis(4));
        m.error("invalid_request");
        m.sequences.inc_by(12);
        let text = m.render();
        for want in [
            "oxrl_rm_batches_total 1",
            "oxrl_rm_batch_sequences_sum 12.0",
            "oxrl_rm_batch_requests_count 1",
            "oxrl_rm_errors_total{reason=\"invalid_request\"} 1",
            "oxrl_rm_sequences_total 12",
            "oxrl_rm_requests_total 0",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }
}
