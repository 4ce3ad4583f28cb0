//! The measured windows of `oxrl bench load` and what they cost: the counts and CPU seconds
//! of every process at a window's edges, and the figures that transfer to a deployment —
//! each server's CPU per lease, per group and per heartbeat, the leases one coordinator core
//! serves at that cost, and which resource ran out.
//!
//! On a small machine the simulated actors, the learner's training and the coordinator share
//! the same cores, so a busy machine is not a busy coordinator: the verdict names every
//! resource that was near its limit, and the per-operation costs stand on their own.

use super::cpu::{self, MachineCpu};
use super::tally::{Counts, Tally};
use std::time::Instant;

/// The learner's training thread (`learner::server`); the rest of its CPU is intake.
const TRAINER_THREAD: &str = "oxrl-trainer";

/// A resource counts as saturated above this share of its limit.
const SATURATED: f64 = 0.9;

/// Everything counted at one instant.
#[derive(Debug, Clone, Copy)]
pub(super) struct Snapshot {
    at: Instant,
    coordinator_s: f64,
    learner_s: f64,
    trainer_s: f64,
    actors_s: f64,
    machine: MachineCpu,
    counts: Counts,
}

impl Snapshot {
    /// Reads the servers' and this process's CPU counters and the tally's counts (a server
    /// that is gone reads as zero).
    pub fn take(coordinator: Option<u32>, learner: Option<u32>, tally: &Tally) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            coordinator_s: coordinator.and_then(cpu::process_s).unwrap_or(0.0),
            learner_s: learner.and_then(cpu::process_s).unwrap_or(0.0),
            trainer_s: learner.map_or(0.0, |pid| cpu::threads_named_s(pid, TRAINER_THREAD)),
            actors_s: cpu::this_process_s().unwrap_or(0.0),
            machine: cpu::machine(),
            counts: tally.counts(),
        }
    }
}

/// What happened between two snapshots.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Window {
    pub seconds: f64,
    pub coordinator_s: f64,
    pub learner_s: f64,
    pub trainer_s: f64,
    pub actors_s: f64,
    pub machine_busy_s: f64,
    pub machine_total_s: f64,
    pub counts: Counts,
}

impl Window {
    pub fn between(a: &Snapshot, b: &Snapshot) -> Window {
        Window {
            seconds: (b.at - a.at).as_secs_f64(),
            coordinator_s: b.coordinator_s - a.coordinator_s,
            learner_s: b.learner_s - a.learner_s,
            trainer_s: b.trainer_s - a.trainer_s,
            actors_s: b.actors_s - a.actors_s,
            machine_busy_s: b.machine.busy_s - a.machine.busy_s,
            machine_total_s: b.machine.total_s - a.machine.total_s,
            counts: b.counts - a.counts,
        }
    }

    fn per_s(&self, n: u64) -> f64 {
        n as f64 / self.seconds.max(1e-9)
    }

    fn cores(&self, cpu_s: f64) -> f64 {
        cpu_s / self.seconds.max(1e-9)
    }
}

/// Microseconds of `cpu_s` per one of `n` operations (0 when there were none).
fn us_per(cpu_s: f64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        cpu_s * 1e6 / n as f64
    }
}

/// The figures of one sweep size.
#[derive(Debug, Clone, Default)]
pub(super) struct Costs {
    pub leases_per_s: f64,
    pub groups_per_s: f64,
    pub heartbeats_per_s: f64,
    /// Lease RPCs answered with a refusal (stale weights, pool empty), per second.
    pub refusals_per_s: f64,
    /// RPCs the coordinator answered per second: heartbeats, Lease (granted or refused),
    /// Complete (one per granted lease) and the learner's CheckLease (one per group).
    pub coordinator_rpcs_per_s: f64,
    /// Its CPU per RPC of any kind.
    pub coordinator_us_per_rpc: f64,
    /// Cores the coordinator used under load.
    pub coordinator_cores: f64,
    /// Its CPU per granted lease, everything in the window included (the lease's Lease and
    /// Complete RPCs, the learner's lease checks, refused leases, heartbeats, the reaper).
    pub coordinator_us_per_lease: f64,
    pub coordinator_us_per_group: f64,
    /// Its CPU per heartbeat with no leases at all (the idle window; the reaper's ticks
    /// included, so an upper bound).
    pub coordinator_us_per_heartbeat: f64,
    /// Per lease, the idle window's heartbeat cost taken out.
    pub coordinator_us_per_lease_net: f64,
    /// Leases per second one coordinator core serves at this size's cost per lease.
    pub coordinator_leases_per_core_s: f64,
    pub learner_cores: f64,
    /// Cores of the learner outside its training thread: gRPC, validation, queueing.
    pub learner_intake_cores: f64,
    pub learner_intake_us_per_group: f64,
    pub trainer_cores: f64,
    /// Cores the simulated actors (this process) used.
    pub actors_cores: f64,
    pub machine_busy_cores: f64,
    pub machine_busy_fraction: f64,
    /// The resources at or above 90 % of their limit ("none" when none was).
    pub saturated: Vec<&'static str>,
}

impl Costs {
    /// The figures of the loaded window `load`, with the heartbeat cost of `idle`.
    pub fn of(load: &Window, idle: &Window, cores: usize) -> Costs {
        let c = &load.counts;
        let us_per_heartbeat = us_per(idle.coordinator_s, idle.counts.heartbeats);
        let net_s = (load.coordinator_s - us_per_heartbeat * 1e-6 * c.heartbeats as f64).max(0.0);
        let coordinator_cores = load.cores(load.coordinator_s);
        let rpcs = c.heartbeats + c.refusals + 2 * c.leases + c.accepted;
        let machine_busy_fraction = load.machine_busy_s / load.machine_total_s.max(1e-9);
        let mut costs = Costs {
            leases_per_s: load.per_s(c.leases),
            groups_per_s: load.per_s(c.accepted),
            heartbeats_per_s: load.per_s(c.heartbeats),
            refusals_per_s: load.per_s(c.refusals),
            coordinator_rpcs_per_s: load.per_s(rpcs),
            coordinator_us_per_rpc: us_per(load.coordinator_s, rpcs),
            coordinator_cores,
            coordinator_us_per_lease: us_per(load.coordinator_s, c.leases),
            coordinator_us_per_group: us_per(load.coordinator_s, c.accepted),
            coordinator_us_per_heartbeat: us_per_heartbeat,
            coordinator_us_per_lease_net: us_per(net_s, c.leases),
            coordinator_leases_per_core_s: load.per_s(c.leases) / coordinator_cores.max(1e-9),
            learner_cores: load.cores(load.learner_s),
            learner_intake_cores: load.cores(load.learner_s - load.trainer_s),
            learner_intake_us_per_group: us_per(load.learner_s - load.trainer_s, c.accepted),
            trainer_cores: load.cores(load.trainer_s),
            actors_cores: load.cores(load.actors_s),
            machine_busy_cores: machine_busy_fraction * cores as f64,
            machine_busy_fraction,
            saturated: Vec::new(),
        };
        costs.saturated = costs.verdict();
        costs
    }

    fn verdict(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.machine_busy_fraction >= SATURATED {
            out.push("machine CPU");
        }
        if self.coordinator_cores >= SATURATED {
            out.push("coordinator CPU");
        }
        if self.trainer_cores >= SATURATED {
            out.push("learner training");
        }
        if out.is_empty() {
            out.push("none");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(seconds: f64, coordinator_s: f64, leases: u64, heartbeats: u64) -> Window {
        Window {
            seconds,
            coordinator_s,
            learner_s: 2.0,
            trainer_s: 1.5,
            actors_s: 1.0,
            machine_busy_s: 19.0 * seconds / 10.0,
            machine_total_s: 2.0 * seconds,
            counts: Counts {
                leases,
                heartbeats,
                accepted: leases,
                completed: leases,
                refusals: 0,
            },
        }
    }

    #[test]
    fn costs_per_operation_and_per_core() {
        // Idle: 1000 heartbeats for 0.02 s, so 20 us each.
        let idle = window(5.0, 0.02, 0, 1000);
        // Load: 10 s, 1000 leases, 2000 heartbeats, 0.5 s of coordinator CPU.
        let load = window(10.0, 0.5, 1000, 2000);
        let c = Costs::of(&load, &idle, 2);
        assert!((c.leases_per_s - 100.0).abs() < 1e-9);
        assert!((c.coordinator_cores - 0.05).abs() < 1e-9);
        assert!((c.coordinator_us_per_lease - 500.0).abs() < 1e-6);
        assert!((c.coordinator_us_per_heartbeat - 20.0).abs() < 1e-6);
        // 0.5 s - 2000 x 20 us = 0.46 s over 1000 leases.
        assert!((c.coordinator_us_per_lease_net - 460.0).abs() < 1e-6);
        assert!((c.coordinator_leases_per_core_s - 2000.0).abs() < 1e-6);
        // 2000 heartbeats + 1000 x (lease, complete, lease check) = 5000 RPCs in 0.5 s.
        assert!((c.coordinator_rpcs_per_s - 500.0).abs() < 1e-9);
        assert!((c.coordinator_us_per_rpc - 100.0).abs() < 1e-6);
        assert!((c.learner_intake_us_per_group - 500.0).abs() < 1e-6);
        assert!((c.machine_busy_cores - 1.9).abs() < 1e-9);
        assert_eq!(c.saturated, vec!["machine CPU"]);
    }

    #[test]
    fn a_quiet_run_saturates_nothing_and_a_busy_coordinator_says_so() {
        let idle = window(5.0, 0.0, 0, 0);
        let mut quiet = window(10.0, 0.1, 10, 0);
        quiet.machine_busy_s = 2.0;
        let c = Costs::of(&quiet, &idle, 2);
        assert_eq!(c.saturated, vec!["none"]);
        assert_eq!(c.coordinator_us_per_heartbeat, 0.0);
        let mut busy = quiet;
        busy.coordinator_s = 9.5;
        assert_eq!(
            Costs::of(&busy, &idle, 2).saturated,
            vec!["coordinator CPU"]
        );
    }
}
