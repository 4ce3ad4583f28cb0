//! The trainable copy of the policy: fp32 master weights held as candle `Var`s, and the
//! `Policy` built over them (it shares their storage, so updates are seen at once).
//! On a GPU ([`Placement`] from `--gpus` / `OXRL_TEST_DEVICE`) the master weights stay fp32
//! and the policy body computes in bf16 (`Policy::with_compute_dtype`).

use crate::error::Result;
use candle_core::{DType, Device, Tensor, Var};
use policy::{ModelConfig, Placement, Policy, Tokenizer, Weights};
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
    /// Takes ownership of `weights` as fp32 variables (on the weights' device, computing in
    /// fp32).
    pub fn new(config: ModelConfig, tokenizer: Tokenizer, weights: &Weights) -> Result<Self> {
        Self::build(config, tokenizer, weights, None, DType::F32)
    }

    /// Copies `weights` to `at.device` as fp32 variables; the policy body computes in
    /// `at.dtype` (bf16 on a GPU), the LM head in fp32.
    pub fn new_on(
        config: ModelConfig,
        tokenizer: Tokenizer,
        weights: &Weights,
        at: &Placement,
    ) -> Result<Self> {
        Self::build(config, tokenizer, weights, Some(&at.device), at.dtype)
    }

    fn build(
        config: ModelConfig,
        tokenizer: Tokenizer,
        weights: &Weights,
        device: Option<&Device>,
        compute: DType,
    ) -> Result<Self> {
        let mut vars = BTreeMap::new();
        for (name, t) in weights {
            let t = match device {
                Some(d) => t.to_device(d)?,
                None => t.clone(),
            };
            vars.insert(
                name.clone(),
                Var::from_tensor(&t.to_dtype(DType::F32)?.copy()?)?,
            );
        }
        let tensors = vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let policy = Policy::new(&config, &tensors)?.with_compute_dtype(compute);
        Ok(TrainableModel {
            config,
            tokenizer,
            vars,
            policy,
        })
    }

    /// Loads a Hugging Face directory for training.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_on(dir, &Placement::cpu())
    }

    /// [`TrainableModel::load`] onto `at` (fp32 master weights there, body in `at.dtype`).
    pub fn load_on(dir: &Path, at: &Placement) -> Result<Self> {
        let m = policy::ModelDir::load(dir, &at.device, DType::F32)?;
        Self::new_on(m.config, m.tokenizer, &m.weights, at)
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
            v.set(&src.to_device(v.device())?.to_dtype(DType::F32)?)?;
        }
        Ok(())
    }
}
