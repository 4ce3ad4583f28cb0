//! The loss against its formula and gradient, a trivially separable labelling learnt to a
//! perfect ranking, and the whole `train_reward_model` on the embedded default at tiny sizes.

use super::*;
use policy::tokenizer::char_tokenizer;
use policy::ModelConfig;

#[test]
fn bce_matches_its_formula_and_gradient() {
    let d = candle_core::Device::Cpu;
    let s = Var::from_tensor(&Tensor::new(&[0.0f32, 2.0, -3.0, 40.0], &d).unwrap()).unwrap();
    let y = Tensor::new(&[1.0f32, 0.0, 1.0, 1.0], &d).unwrap();
    let loss = bce_with_logits(s.as_tensor(), &y).unwrap();
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let by_hand: f64 = [(0.0, 1.0), (2.0, 0.0), (-3.0, 1.0), (40.0, 1.0)]
        .iter()
        .map(|&(s, y): &(f64, f64)| if y > 0.5 { -sig(s).ln() } else { -sig(-s).ln() })
        .sum::<f64>()
        / 4.0;
    assert!((f64::from(loss.to_scalar::<f32>().unwrap()) - by_hand).abs() < 1e-5);
    let g = loss.backward().unwrap();
    let g = g.get(s.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    for (gi, (s, y)) in g
        .iter()
        .zip([(0.0, 1.0), (2.0, 0.0), (-3.0, 1.0), (40.0, 1.0)])
    {
        assert!((f64::from(*gi) - (sig(s) - y) / 4.0).abs() < 1e-5, "{gi}");
    }
}

#[test]
fn a_separable_labelling_is_learnt_to_a_perfect_ranking() {
    let tok = char_tokenizer();
    let cfg = ModelConfig::tiny(tok.vocab_size(), 16, 1, 2, 2);
    let weights = policy::random_weights(&cfg, 3, &candle_core::Device::Cpu).unwrap();
    let policy = ModelDir {
        config: cfg,
        tokenizer: tok.clone(),
        weights,
    };
    // Right iff the answer ends in an even digit: a function of the last token alone.
    let labelled = |range: std::ops::Range<usize>| -> Vec<Labelled> {
        range
            .map(|i| Labelled {
                prompt: i,
                sequence: tok.encode(&format!("{}+{}={}", i % 7, i % 5, i)).unwrap(),
                prompt_len: 4,
                correct: i % 2 == 0,
            })
            .collect()
    };
    let (train, held_out) = (labelled(0..64), labelled(100..140));
    let config = reward_config(&policy.config, tok.pad_id()).unwrap();
    let vars = initial_vars(&policy).unwrap();
    let tensors: Weights = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let rm = RewardModel::new(&config, &tensors).unwrap();
    let before = probabilities(&rm, &held_out, 64, tok.pad_id()).unwrap();
    assert!(
        before.iter().all(|&p| (p - 0.5).abs() < 1e-9),
        "a zero head says 0.5"
    );
    // The label is a function of the last token only: fitted there.
    let cfg = RmConfig {
        steps: 60,
        batch_size: 16,
        lr: 1e-2,
        warmup: 5,
        objective: RmObjective::LastToken,
        ..Default::default()
    };
    let mut losses = Vec::new();
    fit(&rm, &vars, &train, &cfg, tok.pad_id(), &mut |p| {
        if let RmProgress::Step(s) = p {
            losses.push(s.loss)
        }
    })
    .unwrap();
    assert_eq!(losses.len(), 60);
    assert!(losses[59] < 0.2 * losses[0], "{losses:?}");
    let probs = probabilities(&rm, &held_out, 64, tok.pad_id()).unwrap();
    let labels: Vec<bool> = held_out.iter().map(|l| l.correct).collect();
    assert_eq!(calibration::auc(&probs, &labels), Some(1.0));
    // Every parameter tensor moved: the gradient reached the decoder, not only the head.
    let moved = vars
        .iter()
        .filter(|(n, v)| {
            let diff = (v.as_tensor()
                - &policy
                    .weights
                    .get(*n)
                    .cloned()
                    .unwrap_or_else(|| v.as_tensor().zeros_like().unwrap()))
                .unwrap();
            diff.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        })
        .count();
    assert_eq!(moved, vars.len());
}

#[test]
fn trains_on_the_default_policy_and_saves_a_loadable_reward_model() {
    let policy = policy::default_model::embedded().unwrap();
    let source = tasks::from_spec("addition:2", 0, &tasks::VerifierRegistry::new()).unwrap();
    let cfg = RmConfig {
        train_prompts: 6,
        eval_prompts: 4,
        samples_per_prompt: 4,
        max_new_tokens: 8,
        steps: 3,
        batch_size: 4,
        ..Default::default()
    };
    let mut steps = 0;
    let out = train_reward_model(&policy, source.as_ref(), &cfg, |p| {
        if let RmProgress::Step(_) = p {
            steps += 1
        }
    })
    .unwrap();
    assert_eq!((steps, out.train_samples, out.held_out.n), (3, 24, 16));
    let dir = tempfile::tempdir().unwrap();
    out.model.save(dir.path()).unwrap();
    let back = RewardModelDir::load(dir.path(), &candle_core::Device::Cpu, DType::F32).unwrap();
    let seqs = vec![policy.tokenizer.encode("12+34=46").unwrap()];
    assert_eq!(
        back.model().unwrap().scores(&seqs, 0).unwrap(),
        out.model.model().unwrap().scores(&seqs, 0).unwrap()
    );
}

#[test]
fn within_prompt_auc_ignores_the_ranking_of_prompts() {
    let l = |prompt, correct| Labelled {
        prompt,
        sequence: vec![1],
        prompt_len: 0,
        correct,
    };
    // Prompt 0 (easy) scores high, prompt 1 (hard) low: pooled, right beats wrong mostly,
    // but within each prompt the wrong sample scores higher.
    let samples = [
        l(0, true),
        l(0, false),
        l(1, true),
        l(1, false),
        l(2, true),
        l(3, true),
    ];
    let probs = [0.75, 0.8, 0.1, 0.15, 0.95, 0.9];
    let labels: Vec<bool> = samples.iter().map(|s| s.correct).collect();
    assert_eq!(calibration::auc(&probs, &labels), Some(5.0 / 8.0));
    assert_eq!(within_prompt_auc(&samples, &probs), Some(0.0));
    assert_eq!(best_of_n(&samples, &probs), 0.5);
    assert_eq!(within_prompt_auc(&samples[4..], &probs[4..]), None);
}

#[test]
fn every_token_loss_is_the_last_token_loss_on_one_token_completions_and_averages_otherwise() {
    let tok = char_tokenizer();
    let cfg = ModelConfig::tiny(tok.vocab_size(), 16, 1, 2, 2);
    let mut weights = policy::random_weights(&cfg, 7, &candle_core::Device::Cpu).unwrap();
    weights.remove("lm_head.weight");
    let head: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) * 0.2).collect();
    let head = Tensor::from_vec(head, (1, 16), &candle_core::Device::Cpu).unwrap();
    weights.insert(policy::SCORE_WEIGHT.into(), head);
    let config = reward_config(&cfg, 0).unwrap();
    let rm = RewardModel::new(&config, &weights).unwrap();
    let seqs: Vec<Vec<u32>> = ["12+34=4", "7+5=1", "99+1=1"]
        .iter()
        .map(|t| tok.encode(t).unwrap())
        .collect();
    let labels = [1.0f32, 0.0, 1.0];
    let (scores, pads) = rm.score_every_token(&seqs, 0).unwrap();
    let t = scores.dim(1).unwrap();
    // The last slot is the score used at test time.
    let last = scores.narrow(1, t - 1, 1).unwrap().squeeze(1).unwrap();
    let alone = rm.score_tensor(&seqs, 0).unwrap();
    let diff = (last.clone() - alone)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
    // One-token completions: exactly the last-token loss.
    let one: Vec<usize> = seqs.iter().map(|s| s.len() - 1).collect();
    let every = every_token_bce(&scores, &labels, &pads, &one).unwrap();
    let y = Tensor::new(&labels, &candle_core::Device::Cpu).unwrap();
    let lastloss = bce_with_logits(&last, &y).unwrap();
    let (a, b) = (
        every.to_scalar::<f32>().unwrap(),
        lastloss.to_scalar::<f32>().unwrap(),
    );
    assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    // Longer completions: the mean over each sample's completion slots, then over samples.
    let prompt_lens = [4usize, 3, 5];
    let every = every_token_bce(&scores, &labels, &pads, &prompt_lens)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let s = scores.to_vec2::<f32>().unwrap();
    let bce = |x: f32, y: f32| -> f64 {
        let p = 1.0 / (1.0 + (-f64::from(x)).exp());
        if y > 0.5 {
            -p.ln()
        } else {
            -(1.0 - p).ln()
        }
    };
    let by_hand: f64 = (0..3)
        .map(|i| {
            let slots = pads[i] + prompt_lens[i]..t;
            let n = slots.len() as f64;
            slots.map(|j| bce(s[i][j], labels[i])).sum::<f64>() / n
        })
        .sum::<f64>()
        / 3.0;
    assert!(
        (f64::from(every) - by_hand).abs() < 1e-5,
        "{every} vs {by_hand}"
    );
    assert!((every - a).abs() > 1e-3, "more slots must change the loss");
}
