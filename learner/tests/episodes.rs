//! Multi-turn episodes in the learner: environment tokens are context only (exactly zero
//! gradient, no count in tokens, lag or rho), and a one-turn episode trains exactly as a
//! plain completion does.

mod common;

use candle_core::{Device, Tensor, Var};
use learner::batch::{BatchRow, TokenBatch};
use learner::objective::{self, Aggregation, Objective, ObjectiveInputs};
use learner::Learner;
use rollout::RolloutGroup;

fn weights_of(l: &Learner) -> Vec<f32> {
    let mut all = Vec::new();
    for v in l.model.vars().values() {
        all.extend(
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
    }
    all
}

#[test]
fn environment_tokens_get_exactly_zero_gradient() {
    // Completion: model 6 7, environment 8 9 10, model 11 2.
    let mask = [true, true, false, false, false, true, true];
    let rows = [
        BatchRow {
            prompt: &[4, 5],
            completion: &[6, 7, 8, 9, 10, 11, 2],
            mask: &mask,
        },
        BatchRow {
            prompt: &[4],
            completion: &[12, 2],
            mask: &[],
        },
    ];
    let batch = TokenBatch::from_rows(&rows, 0, &Device::Cpu).unwrap();
    let (b, cols) = (batch.rows(), batch.ids.dim(1).unwrap() - 1);
    let logp: Vec<f32> = (0..b * cols).map(|i| -0.1 - 0.05 * i as f32).collect();
    let logp_train =
        Var::from_tensor(&Tensor::from_vec(logp, (b, cols), &Device::Cpu).unwrap()).unwrap();
    let model_lens = [4, 2];
    let gen: Vec<Vec<f32>> = model_lens.iter().map(|&n| vec![-0.3; n]).collect();
    let adv: Vec<Vec<f32>> = [0.7f32, -0.7]
        .iter()
        .zip(model_lens)
        .map(|(&a, n)| vec![a; n])
        .collect();
    let w = objective::aggregation_weights(Aggregation::Prompt, &[0, 0], &model_lens);
    let weights: Vec<Vec<f32>> = w.iter().zip(model_lens).map(|(&w, n)| vec![w; n]).collect();
    for obj in [
        Objective::Cispo { eps_max: 4.0 },
        Objective::PpoClip {
            eps_low: 0.2,
            eps_high: 0.28,
        },
        Objective::Gspo {
            eps_low: 3e-4,
            eps_high: 4e-4,
        },
    ] {
        let (loss, _) = objective::loss(
            obj,
            &ObjectiveInputs {
                logp_train: logp_train.as_tensor(),
                logp_gen: &batch.per_token(&gen, 0.0).unwrap(),
                advantage: &batch.per_token(&adv, 0.0).unwrap(),
                weight: &batch.per_token(&weights, 0.0).unwrap(),
            },
        )
        .unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(&logp_train).unwrap().to_vec2::<f32>().unwrap();
        let model = batch.completion_mask().unwrap().to_vec2::<f32>().unwrap();
        for (r, (g_row, m_row)) in g.iter().zip(&model).enumerate() {
            for (j, (&gv, &m)) in g_row.iter().zip(m_row).enumerate() {
                if m == 0.0 {
                    assert_eq!(gv, 0.0, "{obj:?}: row {r} index {j} is not a model token");
                } else if matches!(obj, Objective::Cispo { .. }) {
                    // CISPO never clips a gradient away (the clipped objectives may).
                    assert_ne!(gv, 0.0, "{obj:?}: row {r} index {j} is a model token");
                }
            }
        }
        // Row 0 predicts its environment tokens at indices 3, 4, 5: context, no gradient.
        assert_eq!(model[0], vec![0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0]);
    }
}

/// The same group with an explicit all-model mask on every sample.
fn with_full_mask(g: &RolloutGroup) -> RolloutGroup {
    let mut g = g.clone();
    for s in &mut g.samples {
        s.mask = vec![true; s.tokens.len()];
    }
    g
}

#[test]
fn a_one_turn_episode_trains_exactly_as_a_completion() {
    let mut plain = common::learner(3);
    let mut episode = common::learner(3);
    let g = common::group(
        &plain.model,
        "g",
        "12+7=",
        &[("19", 1.0, 0.1), ("18", 0.0, -0.2), ("91", 0.0, 0.0)],
    );
    let a = plain.step(std::slice::from_ref(&g)).unwrap();
    let b = episode.step(&[with_full_mask(&g)]).unwrap();
    assert!(a.tokens > 0);
    assert_eq!(a.loss, b.loss);
    assert_eq!(a.grad_norm, b.grad_norm);
    assert_eq!(a.rho_mean, b.rho_mean);
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(weights_of(&plain), weights_of(&episode));
}

#[test]
fn environment_tokens_count_in_no_figure() {
    let mut l = common::learner(4);
    l.set_version(5);
    let mut g = common::group(
        &l.model,
        "e",
        "3+4=",
        &[("7;ok;7", 1.0, 0.1), ("8;no;9", 0.0, 0.0)],
    );
    // The model wrote "7;" and ";7" (versions 3 and 5); "ok" is the environment's.
    for s in &mut g.samples {
        s.mask = vec![true, true, false, false, true, true];
        s.logprobs = [&s.logprobs[..2], &s.logprobs[4..]].concat();
        s.versions = vec![3, 3, 5, 5];
        s.turns = 2;
    }
    let r = l.step(&[g]).unwrap();
    assert_eq!(r.tokens, 8, "four model tokens per sample");
    assert_eq!(r.lag_hist.values().sum::<u64>(), 8);
    assert_eq!(r.lag_hist.get(&2), Some(&4));
    assert_eq!(r.lag_hist.get(&0), Some(&4));
    assert!(r.rho_mean.is_finite() && r.rho_mean > 0.0);
}
