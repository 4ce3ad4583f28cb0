//! Hugging Face directories: load, save, shards, and clear errors for wrong checkpoints.

mod common;

use candle_core::{DType, Device, Tensor};
use policy::{score_sequences, ModelDir, PolicyError};
use std::collections::HashMap;

fn scores(m: &ModelDir) -> Vec<Vec<f32>> {
    let seqs = vec![
        m.tokenizer.encode("12+30=42").unwrap(),
        m.tokenizer.encode("7*6=42").unwrap(),
    ];
    score_sequences(&m.policy().unwrap(), &seqs, 0, 1.0).unwrap()
}

#[test]
fn saved_llama_and_qwen2_load_back_identical() {
    for cfg in [common::llama_config(), common::qwen2_config()] {
        let m = common::model(&cfg, 1);
        let dir = common::write(&m);
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            assert!(dir.path().join(f).exists(), "{f} missing");
        }
        let back = ModelDir::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
        assert_eq!(
            back.config.architecture().unwrap(),
            cfg.architecture().unwrap()
        );
        assert_eq!(scores(&m), scores(&back));
        // Tied checkpoints store no lm_head, as transformers does.
        let names =
            candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu)
                .unwrap();
        assert_eq!(
            names.contains_key("lm_head.weight"),
            !cfg.tie_word_embeddings
        );
    }
}

#[test]
fn saved_safetensors_carry_transformers_metadata() {
    let m = common::model(&common::llama_config(), 2);
    let dir = common::write(&m);
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
}

#[test]
fn sharded_checkpoints_load_through_the_index() {
    let m = common::model(&common::qwen2_config(), 3);
    let dir = common::write(&m);
    let all =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let mut shards: [HashMap<String, Tensor>; 2] = Default::default();
    let mut weight_map = serde_json::Map::new();
    for (i, (name, t)) in all.into_iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i % 2 + 1);
        weight_map.insert(name.clone(), file.into());
        shards[i % 2].insert(name, t);
    }
    for (i, shard) in shards.iter().enumerate() {
        let path = dir
            .path()
            .join(format!("model-0000{}-of-00002.safetensors", i + 1));
        candle_core::safetensors::save(shard, path).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let back = ModelDir::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(scores(&m), scores(&back));
}

#[test]
fn wrong_shape_names_the_tensor_and_both_shapes() {
    let m = common::model(&common::llama_config(), 4);
    let dir = common::write(&m);
    let mut cfg = m.config.clone();
    cfg.intermediate_size += 16;
    cfg.save(&dir.path().join("config.json")).unwrap();
    let err = ModelDir::load(dir.path(), &Device::Cpu, DType::F32).unwrap_err();
    assert!(matches!(err, PolicyError::ShapeMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("model.layers.0.mlp.gate_proj.weight"), "{msg}");
    assert!(
        msg.contains("[80, 32]") && msg.contains("[96, 32]"),
        "{msg}"
    );
}

#[test]
fn missing_tensor_and_unknown_architecture_are_clear_errors() {
    let m = common::model(&common::llama_config(), 5);
    let dir = common::write(&m);
    let mut weights =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    weights.remove("model.norm.weight");
    candle_core::safetensors::save(&weights, dir.path().join("model.safetensors")).unwrap();
    let msg = ModelDir::load(dir.path(), &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("model.norm.weight"), "{msg}");

    let mut cfg = m.config.clone();
    cfg.architectures = vec!["MambaForCausalLM".into()];
    cfg.save(&dir.path().join("config.json")).unwrap();
    let msg = ModelDir::load(dir.path(), &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("MambaForCausalLM") && msg.contains("LlamaForCausalLM"),
        "{msg}"
    );

    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 3").unwrap();
    let msg = ModelDir::load(dir.path(), &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("config.json"), "{msg}");
}

#[test]
fn tokens_outside_the_vocabulary_are_rejected() {
    let m = common::model(&common::llama_config(), 6);
    let bad = vec![vec![5u32, m.config.vocab_size as u32 + 3]];
    let err = score_sequences(&m.policy().unwrap(), &bad, 0, 1.0).unwrap_err();
    assert!(matches!(err, PolicyError::TokenOutOfVocab { .. }), "{err}");
}
