//! The coordinator's Prometheus metrics (`GET /metrics`, docs/dashboard.md): the run's state
//! as gauges and counters (learner version, actors, leases, prompts, the curriculum pool),
//! what the learner reported of its latest step (reward, pass rate, tokens/s), the lag
//! histogram accumulated from every reported step, and `oxrl_rejected_total{reason}` for
//! what the coordinator refused.
//!
//! The state-mirroring families are refreshed from a [`RunView`] on every scrape; only the
//! rejections are counted as they happen (by the service).

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use proto::metrics_http::{self, Rejections};

use crate::domain::{CompleteOutcome, LeaseCheck, Refusal};
use crate::error::CoordinatorError;
use crate::history::{RunView, MAX_LAG_BUCKETS};

/// Why the coordinator refused a request or part of one: the `reason` label of
/// `oxrl_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// A heartbeat or lease from a member never registered or declared dead.
    UnknownMember,
    /// A lease asked for with weights more than `max_lag` versions behind the learner.
    StaleWeights,
    /// A completion or lease check naming a lease never issued.
    UnknownLease,
    /// A completion of a lease that had already expired.
    ExpiredLease,
    /// A completion from a member that does not hold the lease.
    NotLeaseHolder,
    /// A second completion of the same lease.
    LeaseAlreadyCompleted,
    /// A lease check for a problem the lease did not carry.
    ProblemNotInLease,
    /// A malformed request (bad role, non-finite reward, ...).
    InvalidRequest,
    /// Anything refused because the journal failed.
    JournalFailed,
}

impl Rejection {
    /// Every reason, in the order the dashboard lists them.
    pub(crate) const ALL: [Rejection; 9] = [
        Rejection::UnknownMember,
        Rejection::StaleWeights,
        Rejection::UnknownLease,
        Rejection::ExpiredLease,
        Rejection::NotLeaseHolder,
        Rejection::LeaseAlreadyCompleted,
        Rejection::ProblemNotInLease,
        Rejection::InvalidRequest,
        Rejection::JournalFailed,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Rejection::UnknownMember => "unknown_member",
            Rejection::StaleWeights => "stale_weights",
            Rejection::UnknownLease => "unknown_lease",
            Rejection::ExpiredLease => "expired_lease",
            Rejection::NotLeaseHolder => "not_lease_holder",
            Rejection::LeaseAlreadyCompleted => "lease_already_completed",
            Rejection::ProblemNotInLease => "problem_not_in_lease",
            Rejection::InvalidRequest => "invalid_request",
            Rejection::JournalFailed => "journal_failed",
        }
    }

    /// The reason an operation failed with `error`.
    pub(crate) fn of_error(error: &CoordinatorError) -> Rejection {
        match error {
            CoordinatorError::UnknownMember { .. } => Rejection::UnknownMember,
            CoordinatorError::InvalidRequest { .. } => Rejection::InvalidRequest,
            _ => Rejection::JournalFailed,
        }
    }

    /// The reason a lease was refused, if it counts as a rejection (an empty pool or a
    /// finished run is no fault of the actor's).
    pub(crate) fn of_refusal(refusal: Refusal) -> Option<Rejection> {
        match refusal {
            Refusal::StaleWeights => Some(Rejection::StaleWeights),
            Refusal::PoolEmpty | Refusal::Exhausted | Refusal::Stopping => None,
        }
    }

    /// The reason a completion was not accepted.
    pub(crate) fn of_completion(outcome: CompleteOutcome) -> Option<Rejection> {
        match outcome {
            CompleteOutcome::Accepted => None,
            CompleteOutcome::UnknownLease => Some(Rejection::UnknownLease),
            CompleteOutcome::Expired => Some(Rejection::ExpiredLease),
            CompleteOutcome::AlreadyCompleted => Some(Rejection::LeaseAlreadyCompleted),
            CompleteOutcome::NotHolder => Some(Rejection::NotLeaseHolder),
        }
    }

    /// The reason a lease check failed.
    pub(crate) fn of_check(check: LeaseCheck) -> Option<Rejection> {
        match check {
            LeaseCheck::Known => None,
            LeaseCheck::UnknownLease => Some(Rejection::UnknownLease),
            LeaseCheck::ProblemNotInLease => Some(Rejection::ProblemNotInLease),
        }
    }
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The registry and a handle on every family in it.
pub(crate) struct CoordinatorMetrics {
    registry: Registry,
    rejections: Rejections,
    learner_version: Gauge,
    learner_step: Gauge,
    run_done: Gauge,
    max_lag: Gauge,
    step_lag_max: Gauge,
    actors_alive: Gauge,
    actors_dead: Gauge,
    leases_outstanding: Gauge,
    leases_expired: Counter,
    prompts_completed: Counter,
    pool_active: Gauge,
    pool_retired: Gauge,
    pool_epoch: Gauge,
    pool_exhausted: Gauge,
    zero_variance_groups: Counter,
    lag_tokens: LagHistogram,
    trained_tokens: Counter,
    dropped_stale: Counter,
    reward_mean: FloatGauge,
    pass_rate: FloatGauge,
    tokens_per_second: FloatGauge,
    step_seconds: FloatGauge,
    turns_per_episode: FloatGauge,
    env_calls: Gauge,
    env_call_seconds: FloatGauge,
    env_dropped_groups: Gauge,
    /// Held while refreshing and rendering: counters are brought up to the state by their
    /// difference, which two scrapes at once would count twice.
    scrape: Mutex<()>,
}

impl Default for CoordinatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CoordinatorMetrics {
    /// Every family, registered and at zero.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let rejections = metrics_http::register_rejections(&mut registry);
        // Every reason from the start, at 0: a rate over a series that appears only with its
        // first rejection would miss that rejection.
        for reason in Rejection::ALL {
            drop(rejections.get_or_create(&[("reason", reason.as_str())]));
        }
        let mut gauge = |name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let learner_version = gauge("oxrl_learner_version", "The learner's latest version");
        let learner_step = gauge(
            "oxrl_learner_step",
            "Optimizer steps the learner has reported",
        );
        let run_done = gauge(
            "oxrl_run_done",
            "1 once the learner has taken its last step",
        );
        let max_lag = gauge(
            "oxrl_max_lag",
            "k: an actor may lease only with weights at least learner version - k",
        );
        let step_lag_max = gauge(
            "oxrl_step_lag_max",
            "Largest lag (versions) of any token trained in the latest step",
        );
        let actors_alive = gauge("oxrl_actors_alive", "Actors registered and heard from");
        let actors_dead = gauge(
            "oxrl_actors_dead",
            "Actors declared dead for silence (the most recent ones)",
        );
        let leases_outstanding = gauge(
            "oxrl_leases_outstanding",
            "Leases issued and neither completed nor expired",
        );
        let pool_active = gauge(
            "oxrl_pool_active",
            "Problems in the curriculum pool (not retired)",
        );
        let pool_retired = gauge(
            "oxrl_pool_retired",
            "Problems retired by the curriculum (pass rate reached)",
        );
        let pool_epoch = gauge("oxrl_pool_epoch", "Passes over the training pool completed");
        let pool_exhausted = gauge(
            "oxrl_pool_exhausted",
            "1 once the pool is spent (every prompt retired or the epochs done, no lease out)",
        );
        let mut counter = |name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let leases_expired = counter(
            "oxrl_leases_expired",
            "Leases that expired (deadline passed or actor died); their prompts went back",
        );
        let prompts_completed = counter(
            "oxrl_prompts_completed",
            "Prompts of accepted lease completions",
        );
        let zero_variance_groups = counter(
            "oxrl_zero_variance_groups",
            "Groups the learner dropped because all their rewards were equal",
        );
        let trained_tokens = counter(
            "oxrl_trained_tokens",
            "Completion tokens the learner reported training on",
        );
        let dropped_stale = counter(
            "oxrl_dropped_stale_groups",
            "Groups the learner dropped for a token past the lag bound",
        );
        let mut float = |name: &str, help: &str| {
            let gauge = FloatGauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let reward_mean = float(
            "oxrl_reward_mean",
            "Mean reward of the latest step's samples",
        );
        let pass_rate = float(
            "oxrl_pass_rate",
            "Fraction of the latest step's samples with full reward",
        );
        let tokens_per_second = float(
            "oxrl_tokens_per_second",
            "Completion tokens trained per second in the latest step",
        );
        let step_seconds = float("oxrl_step_seconds", "Duration of the latest step");
        let turns_per_episode = float(
            "oxrl_turns_per_episode",
            "Mean model turns per episode in the latest step (1 for one-turn tasks)",
        );
        let env_call_seconds = float(
            "oxrl_env_call_seconds_mean",
            "Mean seconds of an environment call, over the actors listed in the status",
        );
        let mut gauge = |name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let env_calls = gauge(
            "oxrl_env_calls",
            "Environment calls (reset and step) the actors listed in the status have made",
        );
        let env_dropped_groups = gauge(
            "oxrl_env_dropped_groups",
            "Groups the actors listed in the status dropped because an environment failed",
        );
        let lag_tokens = LagHistogram::default();
        registry.register(
            "oxrl_lag_tokens",
            "Trained tokens by lag in versions (bucket le=i: tokens of lag <= i), over every \
             reported step",
            lag_tokens.clone(),
        );
        Self {
            registry,
            rejections,
            learner_version,
            learner_step,
            run_done,
            max_lag,
            step_lag_max,
            actors_alive,
            actors_dead,
            leases_outstanding,
            leases_expired,
            prompts_completed,
            pool_active,
            pool_retired,
            pool_epoch,
            pool_exhausted,
            zero_variance_groups,
            lag_tokens,
            trained_tokens,
            dropped_stale,
            reward_mean,
            pass_rate,
            tokens_per_second,
            step_seconds,
            turns_per_episode,
            env_calls,
            env_call_seconds,
            env_dropped_groups,
            scrape: Mutex::new(()),
        }
    }

    /// Counts one refusal.
    pub(crate) fn reject(&self, reason: Rejection) {
        metrics_http::count_rejection(&self.rejections, reason.as_str());
    }

    /// Every reason with its count so far.
    pub(crate) fn rejections(&self) -> Vec<(&'static str, u64)> {
        Rejection::ALL
            .iter()
            .map(|r| {
                let labels = [("reason", r.as_str())];
                let count = self.rejections.get(&labels).map_or(0, |c| c.get());
                (r.as_str(), count)
            })
            .collect()
    }

    /// The metrics in the OpenMetrics text format, brought up to `view` first if given.
    pub(crate) fn render(&self, view: Option<&RunView>) -> String {
        let _scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(view) = view {
            self.refresh(view);
        }
        metrics_http::render(&self.registry)
    }

    fn refresh(&self, view: &RunView) {
        let status = &view.status;
        let alive = status.actors.iter().filter(|a| a.alive).count();
        self.learner_version.set(signed(status.learner_version));
        self.run_done.set(i64::from(status.done));
        self.max_lag.set(signed(status.max_lag));
        self.actors_alive.set(signed(alive as u64));
        self.actors_dead
            .set(signed((status.actors.len() - alive) as u64));
        self.leases_outstanding
            .set(signed(status.leases_outstanding));
        self.pool_active.set(signed(status.pool_active));
        self.pool_retired.set(signed(status.pool_retired));
        self.pool_epoch.set(signed(status.epoch));
        self.pool_exhausted.set(i64::from(status.exhausted));
        catch_up(&self.leases_expired, status.leases_expired);
        catch_up(&self.prompts_completed, status.prompts_completed);
        catch_up(&self.zero_variance_groups, status.zero_variance_groups);
        catch_up(&self.trained_tokens, view.totals.tokens);
        catch_up(&self.dropped_stale, view.totals.dropped_stale);
        self.lag_tokens.set(&view.totals.lag_tokens, status.max_lag);
        if let Some(last) = view.steps.last() {
            self.learner_step.set(signed(last.step));
            self.step_lag_max.set(signed(last.max_lag));
            self.reward_mean.set(last.reward_mean);
            self.pass_rate.set(last.pass_rate);
            self.tokens_per_second.set(last.tokens_per_s);
            self.step_seconds.set(last.step_seconds);
            self.turns_per_episode.set(last.turns_mean);
        }
        let env = status.env_totals();
        self.env_calls.set(signed(env.calls));
        self.env_call_seconds
            .set(env.seconds / env.calls.max(1) as f64);
        self.env_dropped_groups
            .set(signed(env.errors.values().sum::<u64>()));
    }
}

impl fmt::Debug for CoordinatorMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoordinatorMetrics").finish_non_exhaustive()
    }
}

/// Brings a counter mirroring a monotone count up to `value` (it never goes down: a count
/// that did, after a restart, is simply not added to until it passes the old one).
fn catch_up(counter: &Counter, value: u64) {
    let behind = value.saturating_sub(counter.get());
    if behind > 0 {
        counter.inc_by(behind);
    }
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `oxrl_lag_tokens`: a histogram whose observations are trained tokens and whose value is
/// each token's lag, kept as counts by lag (prometheus-client's histogram observes one value
/// at a time; a step reports thousands of tokens at once). Buckets `le="0"` .. `le="k"` and
/// `+Inf`.
#[derive(Debug, Clone, Default)]
struct LagHistogram {
    inner: Arc<Mutex<LagCounts>>,
}

#[derive(Debug, Default)]
struct LagCounts {
    lag_tokens: Vec<u64>,
    max_lag: u64,
}

impl LagHistogram {
    fn set(&self, lag_tokens: &[u64], max_lag: u64) {
        let mut counts = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        counts.lag_tokens.clear();
        counts.lag_tokens.extend_from_slice(lag_tokens);
        counts.max_lag = max_lag;
    }
}

impl EncodeMetric for LagHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let counts = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let tokens = &counts.lag_tokens;
        let bounds = usize::try_from(counts.max_lag)
            .unwrap_or(usize::MAX)
            .min(MAX_LAG_BUCKETS - 1)
            + 1;
        let mut buckets: Vec<(f64, u64)> = (0..bounds)
            .map(|lag| (lag as f64, tokens.get(lag).copied().unwrap_or(0)))
            .collect();
        buckets.push((f64::INFINITY, tokens.iter().skip(bounds).sum()));
        let count = tokens.iter().sum();
        let sum = tokens
            .iter()
            .enumerate()
            .map(|(lag, &n)| lag as f64 * n as f64)
            .sum();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{ActorSnapshot, StatusSnapshot};
    use crate::history::{StepPoint, StepTotals};

    fn view(prompts_completed: u64) -> RunView {
        let actor = |name: &str, alive| ActorSnapshot {
            member_id: format!("actor-{name}"),
            name: name.to_string(),
            version: 3,
            since_heard: Duration::from_millis(40),
            alive,
            env: crate::domain::EnvTotals {
                calls: 10,
                seconds: 0.5,
                errors: [("env_timeout".to_string(), 1)].into_iter().collect(),
            },
        };
        RunView {
            status: StatusSnapshot {
                learner_version: 4,
                actors: vec![actor("a", true), actor("b", true), actor("c", false)],
                pool_active: 90,
                pool_retired: 10,
                pool_size: Some(100),
                epoch: 3,
                epochs: 0,
                exhausted: false,
                leases_outstanding: 2,
                leases_expired: 1,
                prompts_completed,
                zero_variance_groups: 5,
                done: false,
                max_lag: 2,
            },
            steps: vec![StepPoint {
                step: 4,
                version: 4,
                reward_mean: 0.25,
                pass_rate: 0.125,
                tokens_per_s: 1500.0,
                step_seconds: 0.5,
                max_lag: 3,
                tokens: 750,
                dropped_stale: 1,
                zero_variance_groups: 2,
                wall_s: 9.0,
                turns_mean: 3.0,
                pool_active: 90,
                pool_retired: 10,
            }],
            totals: StepTotals {
                steps: 4,
                tokens: 1000,
                dropped_stale: 1,
                zero_variance_groups: 5,
                lag_tokens: vec![600, 300, 0, 100],
            },
        }
    }

    fn line<'t>(text: &'t str, name: &str) -> &'t str {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    #[test]
    fn renders_the_run_from_the_view() {
        let metrics = CoordinatorMetrics::new();
        metrics.reject(Rejection::StaleWeights);
        metrics.reject(Rejection::StaleWeights);
        metrics.reject(Rejection::UnknownMember);
        let text = metrics.render(Some(&view(32)));
        for (name, value) in [
            ("oxrl_learner_version", "4"),
            ("oxrl_learner_step", "4"),
            ("oxrl_max_lag", "2"),
            ("oxrl_step_lag_max", "3"),
            ("oxrl_actors_alive", "2"),
            ("oxrl_env_calls", "30"),
            ("oxrl_turns_per_episode", "3.0"),
            ("oxrl_env_dropped_groups", "3"),
            ("oxrl_env_call_seconds_mean", "0.05"),
            ("oxrl_actors_dead", "1"),
            ("oxrl_leases_outstanding", "2"),
            ("oxrl_leases_expired_total", "1"),
            ("oxrl_prompts_completed_total", "32"),
            ("oxrl_pool_active", "90"),
            ("oxrl_pool_retired", "10"),
            ("oxrl_pool_epoch", "3"),
            ("oxrl_pool_exhausted", "0"),
            ("oxrl_zero_variance_groups_total", "5"),
            ("oxrl_trained_tokens_total", "1000"),
            ("oxrl_dropped_stale_groups_total", "1"),
            ("oxrl_reward_mean", "0.25"),
            ("oxrl_pass_rate", "0.125"),
            ("oxrl_tokens_per_second", "1500.0"),
            ("oxrl_run_done", "0"),
            ("oxrl_rejected_total{reason=\"stale_weights\"}", "2"),
            ("oxrl_rejected_total{reason=\"unknown_member\"}", "1"),
        ] {
            assert_eq!(line(&text, name), format!("{name} {value}"), "{text}");
        }
        // Buckets are cumulative; the lag-3 tokens are past k = 2 and only in +Inf.
        for (le, tokens) in [("0.0", 600), ("1.0", 900), ("2.0", 900), ("+Inf", 1000)] {
            let name = format!("oxrl_lag_tokens_bucket{{le=\"{le}\"}}");
            assert_eq!(line(&text, &name), format!("{name} {tokens}"), "{text}");
        }
        assert_eq!(
            line(&text, "oxrl_lag_tokens_count"),
            "oxrl_lag_tokens_count 1000"
        );
        assert_eq!(
            line(&text, "oxrl_lag_tokens_sum"),
            "oxrl_lag_tokens_sum 600.0"
        );
        assert!(text.contains("# TYPE oxrl_lag_tokens histogram"), "{text}");
    }

    #[test]
    fn counters_follow_the_state_without_counting_twice() {
        let metrics = CoordinatorMetrics::new();
        metrics.render(Some(&view(32)));
        metrics.render(Some(&view(32)));
        let text = metrics.render(Some(&view(40)));
        assert_eq!(
            line(&text, "oxrl_prompts_completed_total"),
            "oxrl_prompts_completed_total 40"
        );
    }

    #[test]
    fn rejections_are_listed_for_every_reason() {
        let metrics = CoordinatorMetrics::new();
        metrics.reject(Rejection::ExpiredLease);
        let listed = metrics.rejections();
        assert_eq!(listed.len(), Rejection::ALL.len());
        assert!(listed.contains(&("expired_lease", 1)));
        assert!(listed.contains(&("unknown_lease", 0)));
    }

    #[test]
    fn refusals_map_to_reasons() {
        assert_eq!(
            Rejection::of_refusal(Refusal::StaleWeights),
            Some(Rejection::StaleWeights)
        );
        assert_eq!(Rejection::of_refusal(Refusal::PoolEmpty), None);
        assert_eq!(Rejection::of_refusal(Refusal::Exhausted), None);
        assert_eq!(
            Rejection::of_completion(CompleteOutcome::Expired),
            Some(Rejection::ExpiredLease)
        );
        assert_eq!(Rejection::of_completion(CompleteOutcome::Accepted), None);
        assert_eq!(
            Rejection::of_check(LeaseCheck::ProblemNotInLease),
            Some(Rejection::ProblemNotInLease)
        );
        let unknown = CoordinatorError::UnknownMember {
            member_id: "actor-9".to_string(),
        };
        assert_eq!(Rejection::of_error(&unknown), Rejection::UnknownMember);
    }
}
