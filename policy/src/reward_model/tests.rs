//! The reward model's score against an independent computation, its Hugging Face layout, and
//! a head that is a known function ranking exactly as that function.

use super::*;
use crate::checkpoint::{random_weights, ModelDir};
use crate::tokenizer::char_tokenizer;

fn tiny(untied: bool) -> (ModelConfig, Weights) {
    let tok = char_tokenizer();
    let mut cfg = ModelConfig::tiny(tok.vocab_size(), 16, 2, 4, 2);
    cfg.tie_word_embeddings = !untied;
    let weights = random_weights(&cfg, 7, &Device::Cpu).unwrap();
    (cfg, weights)
}

/// A reward model over `policy_weights` with head `head` (the policy's LM head dropped).
fn reward_weights(policy_weights: &Weights, head: &[f32]) -> Weights {
    let mut w = policy_weights.clone();
    w.remove("lm_head.weight");
    let score = Tensor::from_vec(head.to_vec(), (1, head.len()), &Device::Cpu).unwrap();
    w.insert(SCORE_WEIGHT.into(), score);
    w
}

/// `head · h_last` by hand, from the policy's own hidden states of one unpadded sequence.
fn by_hand(policy: &Policy, seq: &[u32], head: &[f32]) -> f32 {
    let ids = Tensor::from_vec(seq.to_vec(), (1, seq.len()), &Device::Cpu).unwrap();
    let input = StepInput::new(ids, &[0], 0).unwrap();
    let hidden = policy.forward_hidden(&input, None).unwrap();
    let last = hidden.get(0).unwrap().get(seq.len() - 1).unwrap();
    let last = last.to_vec1::<f32>().unwrap();
    last.iter().zip(head).map(|(h, w)| h * w).sum()
}

fn sequences() -> Vec<Vec<u32>> {
    let tok = char_tokenizer();
    ["12+34=", "7+5=12", "99+1=100\n", "3"]
        .iter()
        .map(|s| tok.encode(s).unwrap())
        .collect()
}

#[test]
fn scores_equal_the_policy_hidden_state_times_the_head_in_a_padded_batch() {
    for untied in [false, true] {
        let (cfg, weights) = tiny(untied);
        let policy = Policy::new(&cfg, &weights).unwrap();
        let head: Vec<f32> = (0..16).map(|i| ((i * 7 % 5) as f32 - 2.0) * 0.3).collect();
        let rm = RewardModel::new(
            &reward_config(&cfg, 0).unwrap(),
            &reward_weights(&weights, &head),
        )
        .unwrap();
        let seqs = sequences();
        let scores = rm.scores(&seqs, 0).unwrap();
        for (seq, s) in seqs.iter().zip(&scores) {
            let expected = by_hand(&policy, seq, &head);
            assert!((s - expected).abs() < 1e-4, "{s} vs {expected}");
        }
        // Distinct sequences get distinct scores: the test would see a wrong token index.
        assert!(
            scores.windows(2).all(|w| (w[0] - w[1]).abs() > 1e-6),
            "{scores:?}"
        );
    }
}

#[test]
fn a_one_hot_head_ranks_exactly_as_that_hidden_dimension() {
    let (cfg, weights) = tiny(false);
    let policy = Policy::new(&cfg, &weights).unwrap();
    let seqs = sequences();
    for dim in [0, 5, 15] {
        let mut head = vec![0.0; 16];
        head[dim] = 1.0;
        let rm = RewardModel::new(
            &reward_config(&cfg, 0).unwrap(),
            &reward_weights(&weights, &head),
        )
        .unwrap();
        let scores = rm.scores(&seqs, 0).unwrap();
        let known: Vec<f32> = seqs.iter().map(|s| by_hand(&policy, s, &head)).collect();
        let rank = |v: &[f32]| {
            let mut idx: Vec<usize> = (0..v.len()).collect();
            idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
            idx
        };
        assert_eq!(rank(&scores), rank(&known), "dim {dim}");
    }
}

#[test]
fn saved_as_a_transformers_sequence_classifier_and_loaded_back_unchanged() {
    let (cfg, weights) = tiny(true);
    let head: Vec<f32> = (0..16).map(|i| i as f32 * 0.01).collect();
    let dir = RewardModelDir {
        config: reward_config(&cfg, 0).unwrap(),
        tokenizer: char_tokenizer(),
        weights: reward_weights(&weights, &head),
    };
    let out = tempfile::tempdir().unwrap();
    dir.save(out.path()).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(
        json["architectures"],
        serde_json::json!(["LlamaForSequenceClassification"])
    );
    assert_eq!(json["num_labels"], 1);
    assert_eq!(json["id2label"], serde_json::json!({"0": "LABEL_0"}));
    assert_eq!(json["pad_token_id"], 0);
    let bytes = std::fs::read(out.path().join("model.safetensors")).unwrap();
    let tensors = read_safetensors(&bytes, out.path(), &Device::Cpu).unwrap();
    assert_eq!(tensors[SCORE_WEIGHT].dims(), &[1, 16]);
    assert!(!tensors.contains_key("lm_head.weight"));
    assert!(!tensors.contains_key("score.bias"));
    assert!(tensors
        .keys()
        .all(|k| k == SCORE_WEIGHT || k.starts_with("model.")));

    let back = RewardModelDir::load(out.path(), &Device::Cpu, DType::F32).unwrap();
    let seqs = sequences();
    let (a, b) = (
        dir.model().unwrap().scores(&seqs, 0).unwrap(),
        back.model().unwrap().scores(&seqs, 0).unwrap(),
    );
    assert_eq!(a, b);
    // A reward model is not a policy, and a policy is not a reward model.
    let err = ModelDir::load(out.path(), &Device::Cpu, DType::F32).unwrap_err();
    assert!(err.to_string().contains("is a reward model"), "{err}");
    let policy_dir = tempfile::tempdir().unwrap();
    crate::save_model_dir(policy_dir.path(), &cfg, &char_tokenizer(), &weights).unwrap();
    let err = RewardModelDir::load(policy_dir.path(), &Device::Cpu, DType::F32).unwrap_err();
    assert!(err.to_string().contains("is not a reward model"), "{err}");
}

#[test]
fn a_head_of_the_wrong_shape_is_refused() {
    let (cfg, weights) = tiny(true);
    let mut w = reward_weights(&weights, &[0.0; 16]);
    w.insert(
        SCORE_WEIGHT.into(),
        Tensor::zeros((2, 16), DType::F32, &Device::Cpu).unwrap(),
    );
    let err = RewardModel::new(&cfg, &w).unwrap_err().to_string();
    assert!(
        err.contains("score.weight") && err.contains("[1, 16]"),
        "{err}"
    );
}
