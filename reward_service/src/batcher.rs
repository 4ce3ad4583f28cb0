//! Batching of concurrent score requests: requests that arrive together are scored in one
//! forward pass. One thread owns the model (the forward runs off the async runtime); it waits
//! for a first request, then gathers more for at most [`BatchLimits::max_wait`] or until
//! [`BatchLimits::max_sequences`] sequences, scores them all at once and hands each request its
//! own slice of the scores. The queue in front of it is bounded: a full queue is refused at
//! once ([`BatchError::Busy`]), which a client retries.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::metrics::RmMetrics;

/// What the server scores with: a reward model, or in tests a known function.
pub trait Scorer: Send + 'static {
    /// Token ids at or above this are refused before they reach the model.
    fn vocab_size(&self) -> usize;
    /// Longer sequences are refused before they reach the model (its context length).
    fn max_len(&self) -> usize {
        usize::MAX
    }
    /// One raw score per sequence (each non-empty), in order; an error says what failed.
    fn score(&self, sequences: &[Vec<u32>]) -> Result<Vec<f32>, String>;
}

impl Scorer for policy::RewardModel {
    fn vocab_size(&self) -> usize {
        self.decoder().config().vocab_size
    }

    fn max_len(&self) -> usize {
        self.decoder().config().max_position_embeddings
    }

    fn score(&self, sequences: &[Vec<u32>]) -> Result<Vec<f32>, String> {
        // Rows are left-padded, so the pad id only fills masked slots.
        let pad = self.decoder().config().pad_token_id.unwrap_or(0);
        self.scores(sequences, pad).map_err(|e| e.to_string())
    }
}

/// How requests are batched.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Sequences per forward pass at most (a single larger request is scored alone).
    pub max_sequences: usize,
    /// How long the first request of a batch waits for others to join it.
    pub max_wait: Duration,
    /// Requests waiting for the model at most; more are refused as busy.
    pub queue: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_sequences: 64,
            max_wait: Duration::from_millis(5),
            queue: 256,
        }
    }
}

/// Why a request got no scores.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// The queue is full: try again shortly.
    #[error("the reward model is busy: {0} requests already wait for it")]
    Busy(usize),
    /// The model thread is gone (the server is stopping).
    #[error("the reward model has stopped")]
    Stopped,
    /// The forward pass failed, panicked or gave a wrong number of scores.
    #[error("scoring failed: {0}")]
    Model(String),
}

/// One request waiting for its scores.
struct Job {
    sequences: Vec<Vec<u32>>,
    reply: oneshot::Sender<Result<Vec<f32>, BatchError>>,
}

/// The handle requests are scored through; cheap to clone. The model thread ends when every
/// clone is dropped.
#[derive(Clone)]
pub struct Batcher {
    jobs: Sender<Job>,
    limits: BatchLimits,
    vocab_size: usize,
    max_len: usize,
}

impl Batcher {
    /// Starts the model thread over `scorer`.
    pub fn start(scorer: impl Scorer, limits: BatchLimits, metrics: Arc<RmMetrics>) -> Batcher {
        let limits = BatchLimits {
            max_sequences: limits.max_sequences.max(1),
            queue: limits.queue.max(1),
            ..limits
        };
        let (jobs, queue) = crossbeam_channel::bounded(limits.queue);
        let (vocab_size, max_len) = (scorer.vocab_size(), scorer.max_len());
        let spawned = std::thread::Builder::new()
            .name("oxrl-rm-batcher".into())
            .spawn(move || run(scorer, queue, limits, &metrics));
        if let Err(e) = spawned {
            // Every request then answers Stopped, which the service reports as unavailable.
            warn!(error = %e, "could not start the reward model's thread");
        }
        Batcher {
            jobs,
            limits,
            vocab_size,
            max_len,
        }
    }

    /// The model's vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The longest sequence the model takes.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The limits in force.
    pub fn limits(&self) -> BatchLimits {
        self.limits
    }

    /// Scores `sequences` (checked non-empty and in the vocabulary by the caller), batched with
    /// whatever else arrives with them.
    pub async fn score(&self, sequences: Vec<Vec<u32>>) -> Result<Vec<f32>, BatchError> {
        let (reply, answer) = oneshot::channel();
        match self.jobs.try_send(Job { sequences, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(BatchError::Busy(self.limits.queue)),
            Err(TrySendError::Disconnected(_)) => return Err(BatchError::Stopped),
        }
        answer.await.unwrap_or(Err(BatchError::Stopped))
    }
}

/// The model thread: batches until every sender is gone.
fn run(scorer: impl Scorer, queue: Receiver<Job>, limits: BatchLimits, metrics: &RmMetrics) {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let (batch, next) = gather(first, &queue, &limits);
        carried = next;
        score_batch(&scorer, batch, metrics);
    }
}

/// The batch that starts with `first`: requests that arrive within `max_wait` while the
/// batch has room. A request that would overflow it is handed back for the next batch.
fn gather(first: Job, queue: &Receiver<Job>, limits: &BatchLimits) -> (Vec<Job>, Option<Job>) {
    let deadline = Instant::now() + limits.max_wait;
    let mut size = first.sequences.len();
    let mut batch = vec![first];
    while size < limits.max_sequences {
        match queue.recv_deadline(deadline) {
            Ok(job) if size + job.sequences.len() > limits.max_sequences => {
                return (batch, Some(job))
            }
            Ok(job) => {
                size += job.sequences.len();
                batch.push(job);
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    (batch, None)
}

/// One forward pass over every sequence of `batch`; each job gets its own scores back.
fn score_batch(scorer: &impl Scorer, batch: Vec<Job>, metrics: &RmMetrics) {
    let sequences: Vec<Vec<u32>> = batch
        .iter()
        .flat_map(|j| j.sequences.iter().cloned())
        .collect();
    let started = Instant::now();
    let scored = catch_unwind(AssertUnwindSafe(|| scorer.score(&sequences)))
        .unwrap_or_else(|_| Err("the forward pass panicked".into()))
        .and_then(|scores| {
            if scores.len() == sequences.len() {
                Ok(scores)
            } else {
                Err(format!(
                    "{} scores for {} sequences",
                    scores.len(),
                    sequences.len()
                ))
            }
        });
    metrics.batch(batch.len(), sequences.len(), started.elapsed());
    debug!(
        requests = batch.len(),
        sequences = sequences.len(),
        seconds = started.elapsed().as_secs_f64(),
        "scored a batch"
    );
    let mut offset = 0;
    for job in batch {
        let n = job.sequences.len();
        let answer = match &scored {
            Ok(scores) => Ok(scores[offset..offset + n].to_vec()),
            Err(e) => Err(BatchError::Model(e.clone())),
        };
        offset += n;
        // The caller may have given up on its request; nothing to do then.
        let _ = job.reply.send(answer);
    }
}

#[cfg(test)]
mod tests;
