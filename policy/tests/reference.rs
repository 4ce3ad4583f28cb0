//! oxrl's decoder against an independent implementation: candle-transformers' Llama and
//! Qwen2 load the same Hugging Face checkpoint and must produce the same logits. This pins
//! the conventions a self-consistency test cannot (RoPE layout, GQA head order, biases).

mod common;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::{llama, qwen2};
use policy::batch::StepInput;

fn ours(m: &policy::ModelDir, ids: &[u32]) -> Vec<f32> {
    let policy = m.policy().unwrap();
    let t = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let input = StepInput::new(t, &[0], 0).unwrap();
    let logits = policy.forward(&input, None).unwrap();
    logits
        .narrow(1, ids.len() - 1, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn assert_close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        scale > 1.0,
        "logits too flat to tell implementations apart ({scale})"
    );
    assert!(
        diff < 1e-4 * scale,
        "max |diff| {diff} vs logit scale {scale}"
    );
}

fn vb(dir: &std::path::Path) -> candle_nn::VarBuilder<'static> {
    // SAFETY: the file is written by this test and not modified while mapped.
    unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    }
}

#[test]
fn llama_logits_match_candle_transformers() {
    let m = common::model(&common::llama_config(), 11);
    let dir = common::write(&m);
    let ids = m.tokenizer.encode("12+34=46, 7*8=56").unwrap();
    let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    let cfg: llama::LlamaConfig = serde_json::from_str(&text).unwrap();
    let cfg = cfg.into_config(false);
    let model = llama::Llama::load(vb(dir.path()), &cfg).unwrap();
    let mut cache = llama::Cache::new(false, DType::F32, &cfg, &Device::Cpu).unwrap();
    let t = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let theirs: Vec<f32> = model
        .forward(&t, 0, &mut cache)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_close(&ours(&m, &ids), &theirs);
}

#[test]
fn qwen2_logits_match_candle_transformers() {
    let m = common::model(&common::qwen2_config(), 12);
    let dir = common::write(&m);
    let ids = m.tokenizer.encode("sort 3 1 2:1 2 3").unwrap();
    let c = &m.config;
    let cfg = qwen2::Config {
        vocab_size: c.vocab_size,
        hidden_size: c.hidden_size,
        intermediate_size: c.intermediate_size,
        num_hidden_layers: c.num_hidden_layers,
        num_attention_heads: c.num_attention_heads,
        num_key_value_heads: c.kv_heads(),
        max_position_embeddings: c.max_position_embeddings,
        sliding_window: c.max_position_embeddings,
        max_window_layers: c.num_hidden_layers,
        tie_word_embeddings: c.tie_word_embeddings,
        rope_theta: c.rope_theta,
        rms_norm_eps: c.rms_norm_eps,
        use_sliding_window: false,
        hidden_act: candle_nn::Activation::Silu,
    };
    let mut model = qwen2::ModelForCausalLM::new(&cfg, vb(dir.path())).unwrap();
    let t = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let theirs: Vec<f32> = model
        .forward(&t, 0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_close(&ours(&m, &ids), &theirs);
}
