//! The model's hyper-parameters, read from and written to a Hugging Face `config.json`.
//!
//! Field names are the Hugging Face ones, so `LlamaForCausalLM` and `Qwen2ForCausalLM`
//! configs deserialise as they are; keys oxrl does not use are kept and written back.

use crate::error::{PolicyError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which decoder family a checkpoint belongs to; they differ only in details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen2,
}

impl Architecture {
    /// The Hugging Face class name.
    pub fn hf_name(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    /// The Hugging Face class name of this family's sequence classifier (a reward model).
    pub fn hf_classifier_name(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForSequenceClassification",
            Architecture::Qwen2 => "Qwen2ForSequenceClassification",
        }
    }
}

/// A Hugging Face decoder config (the subset oxrl reads, plus everything else kept verbatim).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelConfig {
    #[serde(default = "default_architectures")]
    pub architectures: Vec<String>,
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama's switch for q/k/v/o biases; Qwen2 always has q/k/v biases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    /// An id or a list of ids in Hugging Face configs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    /// Keys oxrl does not interpret, written back unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_architectures() -> Vec<String> {
    vec!["LlamaForCausalLM".into()]
}
fn default_model_type() -> String {
    "llama".into()
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_max_pos() -> usize {
    2048
}
fn default_act() -> String {
    "silu".into()
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Parses and validates the text of a `config.json`; `path` names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let mut cfg: ModelConfig = serde_json::from_str(text).map_err(|e| PolicyError::Config {
            path: path.into(),
            message: e.to_string(),
        })?;
        let has_rope_theta = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .is_some_and(|v| v.get("rope_theta").is_some());
        cfg.apply_rope_parameters(has_rope_theta)
            .map_err(|message| PolicyError::Config {
                path: path.into(),
                message,
            })?;
        cfg.validate().map_err(|message| PolicyError::Config {
            path: path.into(),
            message,
        })?;
        cfg.architecture()?;
        Ok(cfg)
    }

    /// transformers 5 writes RoPE's settings as `rope_parameters: {"rope_theta", "rope_type"}`
    /// instead of a top-level `rope_theta` (which it still reads): take the theta from there
    /// when the top level has none, since the default (1e4) would silently give other scores,
    /// and refuse a RoPE type other than the default, as `rope_scaling` is refused.
    fn apply_rope_parameters(&mut self, has_rope_theta: bool) -> std::result::Result<(), String> {
        let Some(params) = self.extra.get("rope_parameters") else {
            return Ok(());
        };
        let Some(params) = params.as_object() else {
            return Err(format!("rope_parameters {params} is not an object"));
        };
        if let Some(kind) = params.get("rope_type") {
            if kind.as_str() != Some("default") {
                return Err(format!(
                    "rope_parameters.rope_type {kind} is not supported yet (only \"default\")"
                ));
            }
        }
        let Some(theta) = params.get("rope_theta") else {
            return Ok(());
        };
        let theta = theta
            .as_f64()
            .ok_or_else(|| format!("rope_parameters.rope_theta {theta} is not a number"))?;
        if !has_rope_theta {
            self.rope_theta = theta;
        } else if (self.rope_theta - theta).abs() > 1e-9 * theta.abs() {
            return Err(format!(
                "rope_theta {} and rope_parameters.rope_theta {theta} disagree",
                self.rope_theta
            ));
        }
        Ok(())
    }

    /// Writes `config.json` (pretty-printed, as transformers does).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("config serialises");
        std::fs::write(path, text).map_err(|e| PolicyError::io(path, e))
    }

    /// The decoder family, or an error naming the supported ones.
    pub fn architecture(&self) -> Result<Architecture> {
        let known = |name: &str| match name {
            "LlamaForCausalLM" => Some(Architecture::Llama),
            "Qwen2ForCausalLM" => Some(Architecture::Qwen2),
            // A reward model's decoder is the same family's (`reward_model.rs`).
            "LlamaForSequenceClassification" => Some(Architecture::Llama),
            "Qwen2ForSequenceClassification" => Some(Architecture::Qwen2),
            _ => None,
        };
        if let Some(arch) = self.architectures.iter().find_map(|a| known(a)) {
            return Ok(arch);
        }
        match self.model_type.as_str() {
            "llama" if self.architectures.is_empty() => Ok(Architecture::Llama),
            "qwen2" if self.architectures.is_empty() => Ok(Architecture::Qwen2),
            _ => Err(PolicyError::UnsupportedArchitecture {
                found: self.architectures.clone(),
            }),
        }
    }

    /// Whether this is a sequence classifier (a reward model: `*ForSequenceClassification`),
    /// which has a score head instead of an LM head.
    pub fn is_reward_model(&self) -> bool {
        self.architectures
            .iter()
            .any(|a| a.ends_with("ForSequenceClassification"))
    }

    /// Key/value heads (grouped-query attention); equal to the query heads when absent.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Whether q/k/v projections carry a bias (always for Qwen2, by flag for Llama).
    pub fn qkv_bias(&self) -> bool {
        match self.architecture() {
            Ok(Architecture::Qwen2) => true,
            _ => self.attention_bias.unwrap_or(false),
        }
    }

    /// Whether the output projection carries a bias (Llama's `attention_bias` only).
    pub fn o_bias(&self) -> bool {
        match self.architecture() {
            Ok(Architecture::Llama) => self.attention_bias.unwrap_or(false),
            _ => false,
        }
    }

    /// End-of-sequence ids named by the config.
    pub fn eos_ids(&self) -> Vec<u32> {
        match &self.eos_token_id {
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|v| v as u32).into_iter().collect()
            }
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect(),
            _ => Vec::new(),
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head_dim {} must be even for RoPE",
                self.head_dim()
            ));
        }
        if self.hidden_act != "silu" {
            return Err(format!(
                "hidden_act {:?} is not supported (only silu)",
                self.hidden_act
            ));
        }
        match &self.rope_scaling {
            None | Some(serde_json::Value::Null) => Ok(()),
            Some(v) => Err(format!(
                "rope_scaling {v} is not supported yet; use a checkpoint without rope scaling"
            )),
        }
    }

    /// Every parameter the model needs, with its Hugging Face name and shape.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let (q, kv) = (
            self.num_attention_heads * self.head_dim(),
            self.kv_heads() * self.head_dim(),
        );
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}");
            out.push((format!("{p}.input_layernorm.weight"), vec![h]));
            out.push((format!("{p}.self_attn.q_proj.weight"), vec![q, h]));
            out.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
            out.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
            out.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q]));
            if self.qkv_bias() {
                out.push((format!("{p}.self_attn.q_proj.bias"), vec![q]));
                out.push((format!("{p}.self_attn.k_proj.bias"), vec![kv]));
                out.push((format!("{p}.self_attn.v_proj.bias"), vec![kv]));
            }
            if self.o_bias() {
                out.push((format!("{p}.self_attn.o_proj.bias"), vec![h]));
            }
            out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
            out.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
            out.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
            out.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
        }
        out.push(("model.norm.weight".to_string(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![v, h]));
        }
        out
    }

    /// Total number of parameters.
    pub fn num_parameters(&self) -> usize {
        self.parameter_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// A small Llama config of the given width and depth, for the embedded default and tests.
    pub fn tiny(
        vocab_size: usize,
        hidden: usize,
        layers: usize,
        heads: usize,
        kv_heads: usize,
    ) -> Self {
        ModelConfig {
            architectures: default_architectures(),
            model_type: default_model_type(),
            vocab_size,
            hidden_size: hidden,
            intermediate_size: hidden * 8 / 3 / 16 * 16,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv_heads),
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 512,
            tie_word_embeddings: true,
            attention_bias: Some(false),
            hidden_act: default_act(),
            bos_token_id: None,
            eos_token_id: None,
            pad_token_id: None,
            rope_scaling: None,
            extra: serde_json::Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transformers_5_rope_parameters_give_the_theta() {
        let base = r#""architectures":["Qwen2ForSequenceClassification"],"model_type":"qwen2",
            "vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,
            "num_attention_heads":2,"pad_token_id":0"#;
        let path = Path::new("config.json");
        let v5 = format!(
            r#"{{{base},"rope_parameters":{{"rope_theta":1000000.0,"rope_type":"default"}}}}"#
        );
        let cfg = ModelConfig::from_json(&v5, path).unwrap();
        assert_eq!(cfg.rope_theta, 1e6);
        // Written back with both spellings, it reads the same.
        let back = serde_json::to_string(&cfg).unwrap();
        assert_eq!(ModelConfig::from_json(&back, path).unwrap().rope_theta, 1e6);
        let both = format!(r#"{{{base},"rope_theta":5.0,"rope_parameters":{{"rope_theta":6.0}}}}"#);
        let err = ModelConfig::from_json(&both, path).unwrap_err().to_string();
        assert!(err.contains("disagree"), "{err}");
        let yarn = format!(
            r#"{{{base},"rope_parameters":{{"rope_theta":1e6,"rope_type":"yarn","factor":4.0}}}}"#
        );
        let err = ModelConfig::from_json(&yarn, path).unwrap_err().to_string();
        assert!(err.contains("rope_type"), "{err}");
    }

    #[test]
    fn qwen2_config_parses_with_bias_and_gqa() {
        let json = r#"{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","vocab_size":10,
            "hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":4,
            "num_key_value_heads":2,"rope_theta":1000000.0,"tie_word_embeddings":true,
            "eos_token_id":[3,4],"use_sliding_window":false}"#;
        let cfg: ModelConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.architecture().unwrap(), Architecture::Qwen2);
        assert!(cfg.qkv_bias());
        assert!(!cfg.o_bias());
        assert_eq!(cfg.kv_heads(), 2);
        assert_eq!(cfg.eos_ids(), vec![3, 4]);
        assert_eq!(
            cfg.extra["use_sliding_window"],
            serde_json::Value::Bool(false)
        );
        let names: Vec<_> = cfg.parameter_shapes().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"model.layers.0.self_attn.k_proj.bias".to_string()));
        assert!(!names.contains(&"lm_head.weight".to_string()));
    }

    #[test]
    fn unknown_architecture_names_supported_ones() {
        let mut cfg = ModelConfig::tiny(10, 8, 1, 2, 2);
        cfg.architectures = vec!["GPT2LMHeadModel".into()];
        let err = cfg.architecture().unwrap_err().to_string();
        assert!(
            err.contains("GPT2LMHeadModel") && err.contains("Qwen2ForCausalLM"),
            "{err}"
        );
    }

    #[test]
    fn bad_head_counts_are_rejected() {
        let cfg = ModelConfig::tiny(10, 8, 1, 4, 3);
        assert!(cfg.validate().unwrap_err().contains("num_key_value_heads"));
    }
}
