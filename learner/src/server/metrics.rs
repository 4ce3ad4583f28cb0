//! The learner's Prometheus metrics (`oxrl learner --metrics-listen`): what each step
//! trained (version, step time, tokens/s, reward, lag as trained tokens by versions of lag),
//! what intake admitted and refused (by reason), the queue between them, and the weight
//! broadcast to subscribed actors. Names are documented in `docs/metrics.md`.

use crate::update::StepReport;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use proto::metrics_http::{self, Rejections};
use rollout::group::GroupError;
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;
use tokio::sync::mpsc;

/// A gauge of a float value.
type FloatGauge = Gauge<f64, AtomicU64>;

/// The labels of `oxrl_learner_lag_tokens_total`: one, `lag` (versions).
type LagLabels = [(&'static str, u64); 1];

/// Every family the learner exposes, and the registry that renders them.
pub struct LearnerMetrics {
    registry: Registry,
    pub version: Gauge,
    pub steps: Counter,
    pub step_seconds: Histogram,
    pub tokens_per_second: FloatGauge,
    pub trained_tokens: Counter,
    pub reward_mean: FloatGauge,
    pub pass_rate: FloatGauge,
    pub truncated_fraction: FloatGauge,
    pub lag_tokens: Family<LagLabels, Counter>,
    pub groups_accepted: Counter,
    pub groups_duplicate: Counter,
    pub rejected: Rejections,
    pub dropped_stale: Counter,
    pub zero_variance: Counter,
    queue_depth: Gauge,
    queue: OnceLock<mpsc::WeakSender<rollout::RolloutGroup>>,
    pub weight_encode_seconds: Histogram,
    pub weight_sent_bytes: Counter,
    pub weight_versions_sent: Counter,
    /// Of those, the versions sent as a delta against the subscriber's.
    pub weight_deltas_sent: Counter,
    pub weight_send_seconds: Histogram,
    pub subscribers: Gauge,
}

/// Buckets for durations from 1 ms to about 2 minutes.
fn seconds_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

impl Default for LearnerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl LearnerMetrics {
    /// Registers every family (all at zero).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let rejected = metrics_http::register_rejections(&mut registry);
        let m = LearnerMetrics {
            version: Gauge::default(),
            steps: Counter::default(),
            step_seconds: seconds_buckets(),
            tokens_per_second: FloatGauge::default(),
            trained_tokens: Counter::default(),
            reward_mean: FloatGauge::default(),
            pass_rate: FloatGauge::default(),
            truncated_fraction: FloatGauge::default(),
            lag_tokens: Family::default(),
            groups_accepted: Counter::default(),
            groups_duplicate: Counter::default(),
            rejected,
            dropped_stale: Counter::default(),
            zero_variance: Counter::default(),
            queue_depth: Gauge::default(),
            queue: OnceLock::new(),
            weight_encode_seconds: seconds_buckets(),
            weight_sent_bytes: Counter::default(),
            weight_versions_sent: Counter::default(),
            weight_deltas_sent: Counter::default(),
            weight_send_seconds: seconds_buckets(),
            subscribers: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "oxrl_learner_version",
            "Policy version of the learner's weights",
            m.version.clone(),
        );
        r.register(
            "oxrl_learner_steps",
            "Optimizer steps taken in the run (continues across resumes)",
            m.steps.clone(),
        );
        r.register(
            "oxrl_learner_step_seconds",
            "Wall time of one training step",
            m.step_seconds.clone(),
        );
        r.register(
            "oxrl_learner_tokens_per_second",
            "Completion tokens trained per second in the last step",
            m.tokens_per_second.clone(),
        );
        r.register(
            "oxrl_learner_trained_tokens",
            "Completion tokens trained on",
            m.trained_tokens.clone(),
        );
        r.register(
            "oxrl_learner_reward_mean",
            "Mean verifier reward of the last step's samples",
            m.reward_mean.clone(),
        );
        r.register(
            "oxrl_learner_pass_rate",
            "Fraction of the last step's samples with full reward",
            m.pass_rate.clone(),
        );
        r.register(
            "oxrl_learner_truncated_fraction",
            "Fraction of the last step's samples that hit the length budget",
            m.truncated_fraction.clone(),
        );
        r.register(
            "oxrl_learner_lag_tokens",
            "Completion tokens trained, by lag in versions (trained - sampling version)",
            m.lag_tokens.clone(),
        );
        r.register(
            "oxrl_learner_groups_accepted",
            "Rollout groups admitted to the queue",
            m.groups_accepted.clone(),
        );
        r.register(
            "oxrl_learner_groups_duplicate",
            "Rollout groups refused because their id was already received",
            m.groups_duplicate.clone(),
        );
        r.register(
            "oxrl_learner_dropped_stale_groups",
            "Groups dropped because a token was sampled more than max_lag versions before training",
            m.dropped_stale.clone(),
        );
        r.register(
            "oxrl_learner_zero_variance_groups",
            "Groups not trained on because all their rewards were equal",
            m.zero_variance.clone(),
        );
        r.register(
            "oxrl_learner_queue_depth",
            "Admitted groups waiting in the bounded queue for the trainer",
            m.queue_depth.clone(),
        );
        r.register(
            "oxrl_learner_weight_encode_seconds",
            "Time to encode one version's weights for the wire",
            m.weight_encode_seconds.clone(),
        );
        r.register(
            "oxrl_learner_weight_sent_bytes",
            "Weight bytes (chunk data: f32, bf16 or delta) sent to subscribers, all together",
            m.weight_sent_bytes.clone(),
        );
        r.register(
            "oxrl_learner_weight_versions_sent",
            "Versions sent to subscribers, one per subscriber per version",
            m.weight_versions_sent.clone(),
        );
        r.register(
            "oxrl_learner_weight_deltas_sent",
            "Versions sent as a delta against the subscriber's (weight_sync delta modes)",
            m.weight_deltas_sent.clone(),
        );
        r.register(
            "oxrl_learner_weight_send_seconds",
            "Time to send one version to one subscriber",
            m.weight_send_seconds.clone(),
        );
        r.register(
            "oxrl_learner_subscribers",
            "Actors connected to the weight stream",
            m.subscribers.clone(),
        );
        LearnerMetrics { registry, ..m }
    }

    /// Lets scrapes report the depth of `queue` (without keeping it open).
    pub(crate) fn watch_queue(&self, queue: &mpsc::Sender<rollout::RolloutGroup>) {
        let _ = self.queue.set(queue.downgrade());
    }

    /// Records one training step that took `step_seconds`.
    pub fn record_step(&self, r: &StepReport, step_seconds: f64) {
        self.version.set(r.version as i64);
        self.steps.inc();
        self.step_seconds.observe(step_seconds);
        self.tokens_per_second
            .set(r.tokens as f64 / step_seconds.max(1e-9));
        self.reward_mean.set(r.reward_mean);
        self.pass_rate.set(r.pass_rate);
        self.truncated_fraction.set(r.truncated_frac);
        for (&lag, &tokens) in &r.lag_hist {
            self.lag_tokens
                .get_or_create(&[("lag", lag)])
                .inc_by(tokens);
        }
        self.trained_tokens.inc_by(r.tokens as u64);
        self.dropped_stale.inc_by(r.dropped_stale as u64);
        for _ in 0..r.dropped_stale {
            metrics_http::count_rejection(&self.rejected, "stale");
        }
        self.zero_variance.inc_by(r.zero_variance_groups as u64);
    }

    /// Counts a refused group under `reason`.
    pub fn reject(&self, reason: &'static str) {
        metrics_http::count_rejection(&self.rejected, reason);
    }

    /// The registry as `/metrics` serves it, with the queue depth read now.
    pub fn render(&self) -> String {
        if let Some(queue) = self.queue.get().and_then(|q| q.upgrade()) {
            self.queue_depth
                .set((queue.max_capacity() - queue.capacity()) as i64);
        }
        metrics_http::render(&self.registry)
    }
}

/// The `oxrl_rejected_total` reason of a group that fails validation.
pub fn invalid_reason(e: &GroupError) -> &'static str {
    match e {
        GroupError::Empty => "empty_group",
        GroupError::EmptyPrompt => "empty_prompt",
        GroupError::EmptySample(_) => "empty_sample",
        GroupError::MaskMismatch { .. } => "mask_mismatch",
        GroupError::LengthMismatch { .. } => "length_mismatch",
        GroupError::BadLogprob { .. } => "bad_logprob",
        GroupError::BadReward { .. } => "bad_reward",
        GroupError::TokenOutOfVocab { .. } => "token_out_of_vocab",
    }
}

/// Counts a subscriber for as long as it lives.
pub(crate) struct SubscriberGuard<'a>(&'a Gauge);

impl<'a> SubscriberGuard<'a> {
    pub fn new(gauge: &'a Gauge) -> Self {
        gauge.inc();
        SubscriberGuard(gauge)
    }
}

impl Drop for SubscriberGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_their_names_and_labels() {
        let m = LearnerMetrics::new();
        let report = StepReport {
            version: 3,
            tokens: 7,
            reward_mean: 0.5,
            pass_rate: 0.25,
            truncated_frac: 0.125,
            dropped_stale: 2,
            zero_variance_groups: 1,
            lag_hist: [(0, 4), (2, 3)].into_iter().collect(),
            ..Default::default()
        };
        m.record_step(&report, 0.5);
        m.groups_accepted.inc();
        m.groups_duplicate.inc();
        m.reject("unknown_lease");
        m.reject(invalid_reason(&GroupError::BadLogprob {
            sample: 0,
            index: 1,
            value: f32::NAN,
        }));
        let (tx, _rx) = mpsc::channel(4);
        m.watch_queue(&tx);
        tx.try_send(rollout::RolloutGroup {
            group_id: "g".into(),
            problem_id: "p".into(),
            prompt_tokens: vec![1],
            samples: vec![],
        })
        .unwrap();
        let subscriber = SubscriberGuard::new(&m.subscribers);
        let text = m.render();
        for line in [
            "oxrl_learner_version 3",
            "oxrl_learner_steps_total 1",
            "oxrl_learner_step_seconds_count 1",
            "oxrl_learner_tokens_per_second 14.0",
            "oxrl_learner_trained_tokens_total 7",
            "oxrl_learner_reward_mean 0.5",
            "oxrl_learner_pass_rate 0.25",
            "oxrl_learner_truncated_fraction 0.125",
            "oxrl_learner_lag_tokens_total{lag=\"0\"} 4",
            "oxrl_learner_lag_tokens_total{lag=\"2\"} 3",
            "oxrl_learner_groups_accepted_total 1",
            "oxrl_learner_groups_duplicate_total 1",
            "oxrl_learner_dropped_stale_groups_total 2",
            "oxrl_learner_zero_variance_groups_total 1",
            "oxrl_rejected_total{reason=\"stale\"} 2",
            "oxrl_rejected_total{reason=\"unknown_lease\"} 1",
            "oxrl_rejected_total{reason=\"bad_logprob\"} 1",
            "oxrl_learner_queue_depth 1",
            "oxrl_learner_subscribers 1",
            "oxrl_learner_weight_sent_bytes_total 0",
            "oxrl_learner_weight_versions_sent_total 0",
            "oxrl_learner_weight_deltas_sent_total 0",
            "oxrl_learner_weight_encode_seconds_count 0",
            "oxrl_learner_weight_send_seconds_count 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        drop(subscriber);
        assert!(m
            .render()
            .lines()
            .any(|l| l == "oxrl_learner_subscribers 0"));
    }
}
