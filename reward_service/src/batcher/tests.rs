//! Batching against scoring alone: concurrent requests share forward passes and get exactly
//! their own scores (a known function, and a real reward model to 1e-5), an oversized
//! request is scored on its own, and a failing or panicking model answers errors, never
//! scores, and keeps serving.

use super::*;
use std::sync::Mutex;

/// A known function of a sequence, recording the size of every forward pass.
struct Known {
    batches: Arc<Mutex<Vec<usize>>>,
}

fn known(seq: &[u32]) -> f32 {
    seq.iter().map(|&t| t as f32).sum::<f32>() * 0.25 - seq.len() as f32
}

impl Scorer for Known {
    fn vocab_size(&self) -> usize {
        100
    }
    fn score(&self, sequences: &[Vec<u32>]) -> Result<Vec<f32>, String> {
        self.batches.lock().unwrap().push(sequences.len());
        Ok(sequences.iter().map(|s| known(s)).collect())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `n` requests of two sequences of various lengths.
fn requests(n: usize) -> Vec<Vec<Vec<u32>>> {
    (0..n)
        .map(|i| {
            (0..2)
                .map(|j| {
                    (0..(1 + (i + j) % 5) as u32)
                        .map(|t| t + i as u32)
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// Sends every request at once; each one's scores.
fn concurrently(
    rt: &tokio::runtime::Runtime,
    b: &Batcher,
    reqs: &[Vec<Vec<u32>>],
) -> Vec<Vec<f32>> {
    rt.block_on(async {
        let tasks: Vec<_> = reqs
            .iter()
            .map(|r| {
                let (b, r) = (b.clone(), r.clone());
                tokio::spawn(async move { b.score(r).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap().unwrap());
        }
        out
    })
}

fn limits(max_sequences: usize, wait_ms: u64) -> BatchLimits {
    BatchLimits {
        max_sequences,
        max_wait: Duration::from_millis(wait_ms),
        queue: 64,
    }
}

#[test]
fn requests_that_arrive_together_share_a_forward_pass_and_keep_their_scores() {
    let rt = runtime();
    let batches = Arc::new(Mutex::new(Vec::new()));
    let scorer = Known {
        batches: batches.clone(),
    };
    let b = Batcher::start(scorer, limits(64, 300), Arc::new(RmMetrics::new()));
    let reqs = requests(8);
    let got = concurrently(&rt, &b, &reqs);
    for (r, scores) in reqs.iter().zip(&got) {
        let want: Vec<f32> = r.iter().map(|s| known(s)).collect();
        assert_eq!(scores, &want);
    }
    let sizes = batches.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 16);
    assert!(
        sizes.len() < 8,
        "8 requests took {} passes: {sizes:?}",
        sizes.len()
    );
}

#[test]
fn a_batch_never_exceeds_its_bound_but_a_large_request_is_scored_alone() {
    let rt = runtime();
    let batches = Arc::new(Mutex::new(Vec::new()));
    let scorer = Known {
        batches: batches.clone(),
    };
    let b = Batcher::start(scorer, limits(5, 100), Arc::new(RmMetrics::new()));
    let got = concurrently(&rt, &b, &requests(6));
    assert_eq!(got.len(), 6);
    let big: Vec<Vec<u32>> = (0..7).map(|i| vec![i]).collect();
    let scores = rt.block_on(b.score(big.clone())).unwrap();
    assert_eq!(scores, big.iter().map(|s| known(s)).collect::<Vec<_>>());
    let sizes = batches.lock().unwrap().clone();
    let (last, rest) = sizes.split_last().unwrap();
    assert_eq!(*last, 7);
    assert!(rest.iter().all(|&n| n <= 5), "{sizes:?}");
    assert_eq!(rest.iter().sum::<usize>(), 12);
}

/// A model that answers one score too few, then panics, then works.
struct Broken {
    calls: Mutex<usize>,
}

impl Scorer for Broken {
    fn vocab_size(&self) -> usize {
        10
    }
    fn score(&self, sequences: &[Vec<u32>]) -> Result<Vec<f32>, String> {
        let calls = {
            let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
            *calls += 1;
            *calls
        };
        match calls {
            1 => Ok(vec![0.0; sequences.len() - 1]),
            2 => panic!("a broken model"),
            _ => Ok(vec![1.5; sequences.len()]),
        }
    }
}

#[test]
fn a_wrong_count_or_a_panic_is_an_error_and_the_model_keeps_serving() {
    let rt = runtime();
    let scorer = Broken {
        calls: Mutex::new(0),
    };
    let b = Batcher::start(scorer, limits(64, 1), Arc::new(RmMetrics::new()));
    let seqs = vec![vec![1, 2], vec![3]];
    let e = rt.block_on(b.score(seqs.clone())).unwrap_err();
    assert!(
        matches!(&e, BatchError::Model(m) if m.contains("1 scores for 2")),
        "{e}"
    );
    let e = rt.block_on(b.score(seqs.clone())).unwrap_err();
    assert!(
        matches!(&e, BatchError::Model(m) if m.contains("panicked")),
        "{e}"
    );
    assert_eq!(rt.block_on(b.score(seqs)).unwrap(), vec![1.5, 1.5]);
}

/// A tiny random reward model over the character vocabulary.
fn reward_model() -> policy::RewardModel {
    use candle_core::{Device, Tensor};
    let tok = policy::tokenizer::char_tokenizer();
    let cfg = policy::ModelConfig::tiny(tok.vocab_size(), 16, 2, 4, 2);
    let mut w = policy::random_weights(&cfg, 11, &Device::Cpu).unwrap();
    w.remove("lm_head.weight");
    let head: Vec<f32> = (0..16).map(|i| ((i * 7 % 5) as f32 - 2.0) * 0.3).collect();
    let score = Tensor::from_vec(head, (1, 16), &Device::Cpu).unwrap();
    w.insert(policy::SCORE_WEIGHT.into(), score);
    let cfg = policy::reward_config(&cfg, 0).unwrap();
    policy::RewardModel::new(&cfg, &w).unwrap()
}

#[test]
fn a_reward_model_scores_a_batch_as_it_scores_each_request_alone() {
    let rt = runtime();
    let model = reward_model();
    let tok = policy::tokenizer::char_tokenizer();
    let texts = [
        ["12+34=", "12+34=46"],
        ["7+5=12\n", "3"],
        ["99+1=100", "0+0=0 and more text"],
    ];
    let reqs: Vec<Vec<Vec<u32>>> = texts
        .iter()
        .map(|r| r.iter().map(|t| tok.encode(t).unwrap()).collect())
        .collect();
    let alone: Vec<f32> = reqs
        .iter()
        .flatten()
        .flat_map(|s| Scorer::score(&model, std::slice::from_ref(s)).unwrap())
        .collect();
    let metrics = Arc::new(RmMetrics::new());
    let b = Batcher::start(model, limits(64, 300), metrics.clone());
    let together: Vec<f32> = concurrently(&rt, &b, &reqs).into_iter().flatten().collect();
    assert_eq!(alone.len(), together.len());
    for (a, t) in alone.iter().zip(&together) {
        assert!((a - t).abs() < 1e-5, "alone {a}, batched {t}");
    }
    assert!(alone.iter().any(|s| s.abs() > 1e-3), "{alone:?}");
    let passes = metrics.batches.get();
    assert!(
        passes < 3,
        "3 concurrent requests took {passes} forward passes"
    );
}
