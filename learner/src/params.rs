//! The trainable copy of the policy: fp32 master weights held as candle `Var`s, and the
//! `Policy` built over them (it shares their storage, so updates are seen at once).

use crate::error::Result;
use candle_core::{DType, Tensor, Var};
use policy::{ModelConfig, Policy, Tokenizer, Weights};
use std::collections::BTreeMap;
use std::path::Path;

/// fp32 master weights by Hugging Face name.
pub struct TrainableModel {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    vars: BTreeMap<String, Var>,
    policy: Policy,
}

impl TrainableModel {
    /// Takes ownership of `weights` as fp32 variables.
    pub fn new(config: ModelConfig, tokenizer: Tokenizer, weights: &Weights) -> Result<Self> {
        let mut vars = BTreeMap::new();
        for (name, t) in weights {
            vars.insert(
                name.clone(),
                Var::from_tensor(&t.to_dtype(DType::F32)?.copy()?)?,
            );
        }
        let tensors = vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let policy = Policy::new(&config, &tensors)?;
        Ok(TrainableModel {
            config,
            tokenizer,
            vars,
            policy,
        })
    }

    /// Loads a Hugging Face directory for training.
    pub fn load(dir: &Path) -> Result<Self> {
        let m = policy::ModelDir::load(dir, &candle_core::Device::Cpu, DType::F32)?;
        Self::new(m.config, m.tokenizer, &m.weights)
    }

    /// The policy over the live weights (gradients flow into the variables).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The variables, by name.
    pub fn vars(&self) -> &BTreeMap<String, Var> {
        &self.vars
    }

    /// A detached copy of the current weights (safe to hand to another thread).
    pub fn snapshot(&self) -> Result<Weights> {
        let mut out = Weights::new();
        for (name, v) in &self.vars {
            out.insert(name.clone(), v.as_tensor().detach().copy()?);
        }
        Ok(out)
    }

    /// Writes the weights as a Hugging Face directory.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let weights: Weights = self
            .vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        policy::save_model_dir(dir, &self.config, &self.tokenizer, &weights)?;
        Ok(())
    }

    /// Number of trainable scalars.
    pub fn num_parameters(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// Overwrites the weights in place (e.g. on resume).
    pub fn set_weights(&self, weights: &Weights) -> Result<()> {
        for (name, v) in &self.vars {
            let src: &Tensor =
                weights
                    .get(name)
                    .ok_or_else(|| crate::error::LearnerError::Checkpoint {
                        path: "<weights>".into(),
                        message: format!("no tensor {name}"),
                    })?;
            v.set(&src.to_dtype(DType::F32)?)?;
        }
        Ok(())
    }
}
