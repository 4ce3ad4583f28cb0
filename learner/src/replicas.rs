//! Data parallelism inside one learner process (`oxrl learner --gpus N`): rank 0 is the
//! learner the server trains and publishes; ranks 1..N are [`Learner`]s with their own copy
//! of the weights on their own device and their own end of a [`Collective`] group, each
//! driven from its own thread. [`Replicas::step`] hands every rank the same groups; the ranks
//! split the micro-batches, sum gradients through the collective and take the same optimizer
//! step, so rank 0 ends each step with the weights one process would have.
//!
//! The driver is the same whatever the collective: NCCL over a node's GPUs in production,
//! TCP on loopback in the CPU tests (`learner/tests/replicas.rs`).

use crate::error::{LearnerError, Result};
use crate::update::{Learner, StepReport};
use crossbeam_channel::{bounded, Receiver, Sender};
use rollout::RolloutGroup;
use std::sync::Arc;

/// One worker rank's thread and its channels.
struct Worker {
    rank: usize,
    jobs: Sender<Arc<Vec<RolloutGroup>>>,
    done: Receiver<Result<()>>,
}

/// Rank 0 and the threads driving the other ranks.
pub struct Replicas {
    primary: Learner,
    workers: Vec<Worker>,
}

impl Replicas {
    /// No data parallelism: rank 0 alone.
    pub fn single(learner: Learner) -> Self {
        Replicas {
            primary: learner,
            workers: Vec::new(),
        }
    }

    /// Forms the group: `primary` is rank 0, `others` are ranks 1.. in order, each already
    /// holding its end of the collective. Every rank takes rank 0's weights first.
    pub fn spawn(mut primary: Learner, others: Vec<Learner>) -> Result<Self> {
        let world = others.len() + 1;
        if primary.rank_and_world() != (0, world) {
            return Err(LearnerError::Collective(format!(
                "rank 0 of {world} replicas has (rank, world) {:?}",
                primary.rank_and_world()
            )));
        }
        let mut workers = Vec::with_capacity(others.len());
        let mut ready = Vec::with_capacity(others.len());
        for (i, mut learner) in others.into_iter().enumerate() {
            let rank = i + 1;
            if learner.rank_and_world() != (rank, world) {
                return Err(LearnerError::Collective(format!(
                    "replica {rank} of {world} has (rank, world) {:?}",
                    learner.rank_and_world()
                )));
            }
            let (jobs, job_rx) = bounded::<Arc<Vec<RolloutGroup>>>(1);
            let (done_tx, done) = bounded(1);
            let (ready_tx, ready_rx) = bounded(1);
            std::thread::Builder::new()
                .name(format!("learner-rank-{rank}"))
                .spawn(move || {
                    if ready_tx.send(learner.sync_weights()).is_err() {
                        return;
                    }
                    // Ends when the driver drops its sender.
                    for groups in job_rx {
                        let result = learner.step(&groups).map(|_| ());
                        let failed = result.is_err();
                        if done_tx.send(result).is_err() || failed {
                            return;
                        }
                    }
                })
                .map_err(|e| LearnerError::Collective(format!("starting rank {rank}: {e}")))?;
            workers.push(Worker { rank, jobs, done });
            ready.push(ready_rx);
        }
        primary.sync_weights()?;
        for (w, r) in workers.iter().zip(ready) {
            wait(w.rank, &r)?;
        }
        Ok(Replicas { primary, workers })
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.workers.len() + 1
    }

    /// Rank 0: the weights the server publishes and checkpoints.
    pub fn primary(&self) -> &Learner {
        &self.primary
    }

    /// Rank 0, mutably (restoring the version or optimizer state on resume).
    pub fn primary_mut(&mut self) -> &mut Learner {
        &mut self.primary
    }

    /// One optimizer step on every rank over the same `groups`; rank 0's report. A rank
    /// that fails fails the step (and the group: a collective cannot go on without it).
    pub fn step(&mut self, groups: &[RolloutGroup]) -> Result<StepReport> {
        if self.workers.is_empty() {
            return self.primary.step(groups);
        }
        let shared = Arc::new(groups.to_vec());
        for w in &self.workers {
            w.jobs.send(shared.clone()).map_err(|_| gone(w.rank))?;
        }
        let report = self.primary.step(groups);
        for w in &self.workers {
            wait(w.rank, &w.done)?;
        }
        report
    }
}

fn gone(rank: usize) -> LearnerError {
    LearnerError::Collective(format!("learner rank {rank} has stopped"))
}

fn wait(rank: usize, rx: &Receiver<Result<()>>) -> Result<()> {
    rx.recv()
        .map_err(|_| gone(rank))?
        .map_err(|e| LearnerError::Collective(format!("learner rank {rank} failed: {e}")))
}
