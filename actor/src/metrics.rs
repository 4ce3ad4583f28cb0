//! The actor's Prometheus metrics (`oxrl actor --metrics-listen`): the versions it holds and
//! has heard of, its leases and pushed groups, decode throughput, in-flight weight swaps,
//! idle against busy time, and the weight stream it receives. Served from start, before it
//! has weights (Kubernetes probes it). Names are documented in `docs/metrics.md`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A gauge of a float value.
type FloatGauge = Gauge<f64, AtomicU64>;
/// A counter of a float value (seconds).
type FloatCounter = Counter<f64, AtomicU64>;

/// Every family the actor exposes, and the registry that renders them.
pub struct ActorMetrics {
    registry: Registry,
    /// The version of the weights the actor decodes with (0 before any).
    pub weights_version: Gauge,
    /// The learner's version as last heard (heartbeats, leases, weight headers); mirrored
    /// from the atomic the run loop keeps, at scrape time.
    learner_version: Gauge,
    learner_seen: std::sync::OnceLock<std::sync::Arc<AtomicU64>>,
    pub leases: Counter,
    pub groups_pushed: Counter,
    pub groups_accepted: Counter,
    pub groups_duplicate: Counter,
    pub groups_rejected: Counter,
    pub completion_tokens: Counter,
    pub decode_tokens_per_second: FloatGauge,
    pub in_flight_swaps: Counter,
    pub idle_seconds: FloatCounter,
    pub busy_seconds: FloatCounter,
    pub weight_bytes_received: Counter,
    pub weight_versions_received: Counter,
    pub weight_receive_seconds: Histogram,
    /// Model turns of each finished episode (1 for a one-turn task).
    pub episode_turns: Histogram,
    /// Seconds each environment call (reset or step) took.
    pub env_call_seconds: Histogram,
    /// Environment calls, their seconds and the groups dropped by reason, for heartbeats.
    env_totals: std::sync::Mutex<proto::EnvTotals>,
    /// `oxrl_rejected_total{reason}`: weight streams refused (`bad_checksum`, `bad_weights`
    /// for any other malformed stream, `weights_shape` for tensors that do not fit the model).
    pub rejected: proto::metrics_http::Rejections,
}

impl Default for ActorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ActorMetrics {
    /// Registers every family (all at zero).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = ActorMetrics {
            registry: Registry::default(),
            weights_version: Gauge::default(),
            learner_version: Gauge::default(),
            learner_seen: std::sync::OnceLock::new(),
            leases: Counter::default(),
            groups_pushed: Counter::default(),
            groups_accepted: Counter::default(),
            groups_duplicate: Counter::default(),
            groups_rejected: Counter::default(),
            completion_tokens: Counter::default(),
            decode_tokens_per_second: FloatGauge::default(),
            in_flight_swaps: Counter::default(),
            idle_seconds: FloatCounter::default(),
            busy_seconds: FloatCounter::default(),
            weight_bytes_received: Counter::default(),
            weight_versions_received: Counter::default(),
            weight_receive_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            episode_turns: Histogram::new([1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0]),
            env_call_seconds: Histogram::new(exponential_buckets(1e-5, 4.0, 12)),
            env_totals: Default::default(),
            rejected: Default::default(),
        };
        let r = &mut registry;
        r.register(
            "oxrl_actor_weights_version",
            "Version of the weights the actor decodes with (0 before any arrived)",
            m.weights_version.clone(),
        );
        r.register(
            "oxrl_actor_learner_version",
            "The learner's version as the actor last heard it",
            m.learner_version.clone(),
        );
        r.register(
            "oxrl_actor_leases",
            "Leases granted by the coordinator",
            m.leases.clone(),
        );
        r.register(
            "oxrl_actor_groups_pushed",
            "Rollout groups pushed to the learner",
            m.groups_pushed.clone(),
        );
        r.register(
            "oxrl_actor_groups_accepted",
            "Pushed groups the learner accepted",
            m.groups_accepted.clone(),
        );
        r.register(
            "oxrl_actor_groups_duplicate",
            "Pushed groups the learner already had",
            m.groups_duplicate.clone(),
        );
        r.register(
            "oxrl_actor_groups_rejected",
            "Pushed groups the learner rejected",
            m.groups_rejected.clone(),
        );
        r.register(
            "oxrl_actor_completion_tokens",
            "Completion tokens generated",
            m.completion_tokens.clone(),
        );
        r.register(
            "oxrl_actor_decode_tokens_per_second",
            "Completion tokens per second of decoding in the last lease",
            m.decode_tokens_per_second.clone(),
        );
        r.register(
            "oxrl_actor_in_flight_swaps",
            "Weight swaps made between decode steps of a lease",
            m.in_flight_swaps.clone(),
        );
        r.register(
            "oxrl_actor_idle_seconds",
            "Seconds spent waiting for work or for newer weights (lag gate)",
            m.idle_seconds.clone(),
        );
        r.register(
            "oxrl_actor_busy_seconds",
            "Seconds spent generating",
            m.busy_seconds.clone(),
        );
        r.register(
            "oxrl_actor_weight_bytes_received",
            "Weight bytes (tensor chunk payload) received from the learner",
            m.weight_bytes_received.clone(),
        );
        r.register(
            "oxrl_actor_weight_versions_received",
            "Complete weight versions received from the learner",
            m.weight_versions_received.clone(),
        );
        r.register(
            "oxrl_actor_weight_receive_seconds",
            "Time from a version's header to its policy being ready",
            m.weight_receive_seconds.clone(),
        );
        r.register(
            "oxrl_actor_episode_turns",
            "Model turns per finished episode (1 for a one-turn task)",
            m.episode_turns.clone(),
        );
        r.register(
            "oxrl_actor_env_call_seconds",
            "Seconds each environment call (reset or step) took",
            m.env_call_seconds.clone(),
        );
        let rejected = proto::metrics_http::register_rejections(r);
        ActorMetrics {
            registry,
            rejected,
            ..m
        }
    }

    /// Records a lease's episodes: the turns of each delivered one, every environment call.
    pub(crate) fn episodes(&self, groups: &[rollout::RolloutGroup], stats: &rollout::EpisodeStats) {
        for s in groups.iter().flat_map(|g| &g.samples) {
            self.episode_turns.observe(s.turns as f64);
        }
        for &seconds in &stats.env_latencies {
            self.env_call_seconds.observe(seconds);
        }
        let mut totals = self.env_totals.lock().unwrap_or_else(|p| p.into_inner());
        totals.calls += stats.env_latencies.len() as u64;
        totals.seconds += stats.env_latencies.iter().sum::<f64>();
    }

    /// Counts a group dropped because its environment failed, for `reason`.
    pub(crate) fn env_dropped(&self, reason: &'static str) {
        self.reject(reason);
        let mut totals = self.env_totals.lock().unwrap_or_else(|p| p.into_inner());
        *totals.errors.entry(reason.to_string()).or_default() += 1;
    }

    /// The environment figures so far, as heartbeats report them.
    pub(crate) fn env_totals(&self) -> proto::EnvTotals {
        self.env_totals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts one refusal: a weight stream refused, or a group an environment failed
    /// (`env_unavailable`, `env_timeout`, `env_invalid`).
    pub(crate) fn reject(&self, reason: &'static str) {
        proto::metrics_http::count_rejection(&self.rejected, reason);
    }

    /// Lets scrapes report `seen`, the learner version the run loop keeps.
    pub(crate) fn watch_learner_version(&self, seen: &std::sync::Arc<AtomicU64>) {
        let _ = self.learner_seen.set(seen.clone());
    }

    /// Adds `idle` to the idle seconds.
    pub(crate) fn idle(&self, idle: Duration) {
        self.idle_seconds.inc_by(idle.as_secs_f64());
    }

    /// Records one generated lease: `busy` decoding (waits excluded), `tokens` generated.
    pub(crate) fn generated(&self, busy: Duration, tokens: u64, swaps: u64) {
        self.busy_seconds.inc_by(busy.as_secs_f64());
        self.completion_tokens.inc_by(tokens);
        self.in_flight_swaps.inc_by(swaps);
        if !busy.is_zero() {
            self.decode_tokens_per_second
                .set(tokens as f64 / busy.as_secs_f64());
        }
    }

    /// The registry as `/metrics` serves it.
    pub fn render(&self) -> String {
        if let Some(seen) = self.learner_seen.get() {
            self.learner_version
                .set(seen.load(Ordering::Relaxed) as i64);
        }
        proto::metrics_http::render(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_their_names() {
        let m = ActorMetrics::new();
        let seen = std::sync::Arc::new(AtomicU64::new(5));
        m.watch_learner_version(&seen);
        m.weights_version.set(4);
        m.leases.inc();
        m.groups_pushed.inc_by(3);
        m.groups_accepted.inc_by(2);
        m.groups_rejected.inc();
        m.generated(Duration::from_secs(2), 10, 1);
        m.idle(Duration::from_millis(500));
        m.weight_bytes_received.inc_by(1024);
        m.weight_versions_received.inc();
        m.weight_receive_seconds.observe(0.25);
        m.episode_turns.observe(3.0);
        m.env_call_seconds.observe(0.002);
        m.reject("env_timeout");
        let text = m.render();
        for line in [
            "oxrl_actor_weights_version 4",
            "oxrl_actor_learner_version 5",
            "oxrl_actor_leases_total 1",
            "oxrl_actor_groups_pushed_total 3",
            "oxrl_actor_groups_accepted_total 2",
            "oxrl_actor_groups_duplicate_total 0",
            "oxrl_actor_groups_rejected_total 1",
            "oxrl_actor_completion_tokens_total 10",
            "oxrl_actor_decode_tokens_per_second 5.0",
            "oxrl_actor_in_flight_swaps_total 1",
            "oxrl_actor_busy_seconds_total 2.0",
            "oxrl_actor_idle_seconds_total 0.5",
            "oxrl_actor_weight_bytes_received_total 1024",
            "oxrl_actor_weight_versions_received_total 1",
            "oxrl_actor_weight_receive_seconds_count 1",
            "oxrl_actor_episode_turns_count 1",
            "oxrl_actor_episode_turns_sum 3.0",
            "oxrl_actor_env_call_seconds_count 1",
            "oxrl_rejected_total{reason=\"env_timeout\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
