//! The CISPO gradient is the weighted policy gradient `sum w * A * grad log pi` with
//! `w = min(rho, eps_max)` held constant: checked against finite differences on a tiny model.

mod common;

use candle_core::{Tensor, Var};
use learner::batch::TokenBatch;
use learner::objective::{self, AdvantageNorm, Aggregation, Objective, ObjectiveInputs};
use learner::optim::{accumulate, Grads};
use learner::TrainableModel;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rollout::RolloutGroup;
use std::collections::BTreeMap;

struct Prepared {
    batch: TokenBatch,
    logp_gen: Tensor,
    adv: Tensor,
    weight: Tensor,
}

fn prepare(groups: &[RolloutGroup]) -> Prepared {
    let rewards: Vec<Vec<f32>> = groups
        .iter()
        .map(|g| g.samples.iter().map(|s| s.reward).collect())
        .collect();
    let adv = objective::normalised_advantages(&rewards, AdvantageNorm::Batch);
    let (mut pairs, mut gen, mut a, mut group_of, mut lens) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (gi, g) in groups.iter().enumerate() {
        for (si, s) in g.samples.iter().enumerate() {
            pairs.push((g.prompt_tokens.as_slice(), s.tokens.as_slice()));
            gen.push(s.logprobs.clone());
            a.push(vec![adv[gi][si]; s.tokens.len()]);
            group_of.push(gi);
            lens.push(s.tokens.len());
        }
    }
    let w = objective::aggregation_weights(Aggregation::Prompt, &group_of, &lens);
    let batch = TokenBatch::new(&pairs, 0, &candle_core::Device::Cpu).unwrap();
    let w: Vec<Vec<f32>> = w.iter().zip(&lens).map(|(&w, &l)| vec![w; l]).collect();
    Prepared {
        logp_gen: batch.per_token(&gen, 0.0).unwrap(),
        adv: batch.per_token(&a, 0.0).unwrap(),
        weight: batch.per_token(&w, 0.0).unwrap(),
        batch,
    }
}

fn logp(model: &TrainableModel, p: &Prepared) -> Tensor {
    policy::next_token_logprobs(model.policy(), &p.batch.ids, &p.batch.pads, 1.0).unwrap()
}

fn scalar(t: Tensor) -> f64 {
    t.to_scalar::<f32>().unwrap() as f64
}

/// Sets every variable to theta0 + h * direction.
fn shift(
    vars: &BTreeMap<String, Var>,
    theta0: &BTreeMap<String, Tensor>,
    dir: &BTreeMap<String, Tensor>,
    h: f64,
) {
    for (n, v) in vars {
        v.set(&(&theta0[n] + (&dir[n] * h).unwrap()).unwrap())
            .unwrap();
    }
}

#[test]
fn cispo_gradient_equals_weighted_policy_gradient_by_finite_differences() {
    let model = common::tiny_model(3);
    let eps_max = 1.5;
    let groups = vec![
        common::group(
            &model,
            "a",
            "12+3=",
            &[("15", 1.0, 0.6), ("51", 0.0, -0.4), ("1", 0.0, 0.3)],
        ),
        common::group(
            &model,
            "b",
            "7+7=",
            &[("14", 1.0, -0.7), ("41", 1.0, 0.9), ("4", 0.0, 0.1)],
        ),
    ];
    let p = prepare(&groups);

    // Autograd gradient of the CISPO loss at theta0.
    let lp = logp(&model, &p);
    let inputs = ObjectiveInputs {
        logp_train: &lp,
        logp_gen: &p.logp_gen,
        advantage: &p.adv,
        weight: &p.weight,
    };
    let (loss, stats) = objective::loss(Objective::Cispo { eps_max }, &inputs).unwrap();
    assert!(
        stats.clip_frac > 0.0 && stats.clip_frac < 1.0,
        "want both truncated and untruncated tokens: {stats:?}"
    );
    let mut grads = Grads::new();
    accumulate(&mut grads, model.vars(), &loss.backward().unwrap()).unwrap();

    // The constant per-token coefficients c = weight * min(rho(theta0), eps) * A.
    let rho0 = objective::rho(&lp, &p.logp_gen).unwrap();
    let c = (objective::truncated_weight(&rho0, eps_max).unwrap() * &p.adv)
        .unwrap()
        .mul(&p.weight)
        .unwrap();

    let theta0: BTreeMap<String, Tensor> = model
        .vars()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().copy().unwrap()))
        .collect();
    // A fixed direction: with a random one, the few whose derivative falls near the finite
    // differences' f32 noise (~1e-3 absolute) fail the relative check by chance (2 % of runs).
    let mut rng = StdRng::seed_from_u64(7);
    let dir: BTreeMap<String, Tensor> = theta0
        .iter()
        .map(|(n, t)| {
            let values: Vec<f32> = (0..t.elem_count())
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let d = Tensor::from_vec(values, t.shape(), t.device()).unwrap();
            (n.clone(), d)
        })
        .collect();
    let auto: f64 = -grads
        .iter()
        .map(|(n, g)| scalar((g * &dir[n]).unwrap().sum_all().unwrap()))
        .sum::<f64>();

    // f(theta) = sum c * log pi_theta: the weighted policy-gradient surrogate.
    let f = |h: f64| {
        shift(model.vars(), &theta0, &dir, h);
        scalar(logp(&model, &p).mul(&c).unwrap().sum_all().unwrap())
    };
    // g(theta) = sum weight * min(rho(theta), eps) * A * log pi_theta: what leaking a
    // gradient through rho would differentiate.
    let g = |h: f64| {
        shift(model.vars(), &theta0, &dir, h);
        let l = logp(&model, &p);
        let r = objective::rho(&l, &p.logp_gen)
            .unwrap()
            .clamp(0.0, eps_max)
            .unwrap();
        scalar(
            (r * &p.adv)
                .unwrap()
                .mul(&p.weight)
                .unwrap()
                .mul(&l)
                .unwrap()
                .sum_all()
                .unwrap(),
        )
    };
    let h = 1e-3;
    let fd = (f(h) - f(-h)) / (2.0 * h);
    let fd_leaky = (g(h) - g(-h)) / (2.0 * h);
    shift(model.vars(), &theta0, &dir, 0.0);
    let rel = (fd - auto).abs() / auto.abs();
    assert!(
        rel < 0.02,
        "autograd {auto} vs finite differences {fd} (rel {rel})"
    );
    let rel_leaky = (fd_leaky - auto).abs() / auto.abs();
    assert!(
        rel_leaky > 0.1,
        "the test cannot tell a detached ratio from a leaky one ({rel_leaky})"
    );
}
