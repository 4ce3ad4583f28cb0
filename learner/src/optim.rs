//! AdamW with global gradient-norm clipping, and a state that checkpoints and resumes.
//!
//! Decoupled weight decay (Loshchilov & Hutter) applies to matrices only; norms and biases
//! are not decayed. Defaults follow ScaleRL: eps 1e-15, weight decay 0.01.

use crate::error::{LearnerError, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub use rollout::config::AdamWConfig;

/// Gradients by parameter name.
pub type Grads = BTreeMap<String, Tensor>;

/// Adds the gradients of `vars` found in `store` into `acc`.
pub fn accumulate(acc: &mut Grads, vars: &BTreeMap<String, Var>, store: &GradStore) -> Result<()> {
    for (name, v) in vars {
        if let Some(g) = store.get(v.as_tensor()) {
            let sum = match acc.remove(name) {
                Some(prev) => (prev + g)?,
                None => g.clone(),
            };
            acc.insert(name.clone(), sum);
        }
    }
    Ok(())
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// AdamW state: step count and first/second moments by parameter name.
pub struct AdamW {
    pub config: AdamWConfig,
    steps: u64,
    moments: BTreeMap<String, (Tensor, Tensor)>,
}

impl AdamW {
    /// A fresh optimizer.
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            config,
            steps: 0,
            moments: BTreeMap::new(),
        }
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Global L2 norm of gradients.
    pub fn grad_norm(grads: &Grads) -> Result<f64> {
        let mut sq = 0f64;
        for g in grads.values() {
            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        Ok(sq.sqrt())
    }

    /// Applies one update with learning rate `lr`. A non-finite gradient is refused and
    /// leaves weights and state untouched.
    pub fn step(
        &mut self,
        vars: &BTreeMap<String, Var>,
        grads: &Grads,
        lr: f64,
    ) -> Result<StepStats> {
        let grad_norm = Self::grad_norm(grads)?;
        if !grad_norm.is_finite() {
            return Err(LearnerError::NonFinite {
                what: "gradient norm",
                step: self.steps,
            });
        }
        let c = &self.config;
        let clip = if c.max_grad_norm > 0.0 && grad_norm > c.max_grad_norm {
            c.max_grad_norm / (grad_norm + 1e-12)
        } else {
            1.0
        };
        self.steps += 1;
        let t = self.steps as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for (name, var) in vars {
            let Some(g) = grads.get(name) else {
                continue;
            };
            let g = (g * clip)?;
            let (m, v) = match self.moments.get(name) {
                Some((m, v)) => (m.clone(), v.clone()),
                None => (g.zeros_like()?, g.zeros_like()?),
            };
            let m = ((m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + c.eps)?)?;
            let w = var.as_tensor();
            let decay = if w.rank() >= 2 { c.weight_decay } else { 0.0 };
            let next = ((w * (1.0 - lr * decay))? - (update * lr)?)?;
            var.set(&next.detach())?;
            self.moments.insert(name.clone(), (m.detach(), v.detach()));
        }
        Ok(StepStats { grad_norm })
    }

    /// Writes the moments (`optimizer.safetensors`) and the step count (`optimizer.json`).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for (name, (m, v)) in &self.moments {
            tensors.insert(format!("m.{name}"), m.clone());
            tensors.insert(format!("v.{name}"), v.clone());
        }
        let path = dir.join("optimizer.safetensors");
        candle_core::safetensors::save(&tensors, &path)?;
        let meta = serde_json::json!({"steps": self.steps, "config": self.config});
        let path = dir.join("optimizer.json");
        std::fs::write(&path, meta.to_string()).map_err(|e| LearnerError::io(&path, e))
    }

    /// Restores a state written by [`AdamW::save`], checking it matches `vars`.
    pub fn load(dir: &Path, vars: &BTreeMap<String, Var>, config: AdamWConfig) -> Result<Self> {
        let path = dir.join("optimizer.json");
        let text = std::fs::read_to_string(&path).map_err(|e| LearnerError::io(&path, e))?;
        let meta: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| LearnerError::Checkpoint {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let steps = meta["steps"]
            .as_u64()
            .ok_or_else(|| LearnerError::Checkpoint {
                path: path.clone(),
                message: "no steps field".into(),
            })?;
        let path = dir.join("optimizer.safetensors");
        let mut tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu)?;
        let mut moments = BTreeMap::new();
        for (name, var) in vars {
            if let (Some(m), Some(v)) = (
                tensors.remove(&format!("m.{name}")),
                tensors.remove(&format!("v.{name}")),
            ) {
                if m.dims() != var.dims() || v.dims() != var.dims() {
                    return Err(LearnerError::Checkpoint {
                        path: path.clone(),
                        message: format!(
                            "optimizer moment for {name} has shape {:?}, parameter has {:?}",
                            m.dims(),
                            var.dims()
                        ),
                    });
                }
                // Moments live where their parameter does (a GPU for `--gpus`).
                let d = var.device();
                moments.insert(name.clone(), (m.to_device(d)?, v.to_device(d)?));
            }
        }
        Ok(AdamW {
            config,
            steps,
            moments,
        })
    }
}

/// Learning rate at `step`: linear warm-up over `warmup` steps, then constant, or cosine
/// decay to `min_ratio * peak` by `total` steps when `total > 0`.
pub fn learning_rate(peak: f64, step: u64, warmup: u64, total: u64, min_ratio: f64) -> f64 {
    if warmup > 0 && step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    if total == 0 || total <= warmup {
        return peak;
    }
    let progress = ((step - warmup) as f64 / (total - warmup) as f64).min(1.0);
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    peak * (min_ratio + (1.0 - min_ratio) * cosine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn one_step_matches_hand_computed_adamw() {
        // First step: m_hat = g, v_hat = g^2, update = g / (|g| + eps) = sign(g).
        let w =
            Var::from_tensor(&Tensor::new(&[[1.0f32, -2.0], [0.5, 3.0]], &Device::Cpu).unwrap())
                .unwrap();
        let loss = (w.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
        let vars: BTreeMap<String, Var> = [("w".to_string(), w.clone())].into();
        let mut grads = Grads::new();
        accumulate(&mut grads, &vars, &loss.backward().unwrap()).unwrap();
        let mut opt = AdamW::new(AdamWConfig {
            max_grad_norm: 0.0,
            ..Default::default()
        });
        let stats = opt.step(&vars, &grads, 0.1).unwrap();
        let expected_norm = (1.0f64 + 4.0 + 0.25 + 9.0).sqrt();
        assert!((stats.grad_norm - expected_norm).abs() < 1e-5);
        let got = w.as_tensor().to_vec2::<f32>().unwrap();
        let want = [
            [1.0 * (1.0 - 0.001) - 0.1, -2.0 * (1.0 - 0.001) + 0.1],
            [0.5 * 0.999 - 0.1, 3.0 * 0.999 - 0.1],
        ];
        for i in 0..2 {
            for j in 0..2 {
                assert!(
                    (got[i][j] - want[i][j] as f32).abs() < 1e-5,
                    "{got:?} vs {want:?}"
                );
            }
        }
    }

    #[test]
    fn clipping_scales_the_gradient_and_state_round_trips() {
        let w = Var::from_tensor(&Tensor::new(&[3.0f32, 4.0], &Device::Cpu).unwrap()).unwrap();
        let vars: BTreeMap<String, Var> = [("b".to_string(), w.clone())].into();
        let mut opt = AdamW::new(AdamWConfig {
            max_grad_norm: 1.0,
            ..Default::default()
        });
        for _ in 0..3 {
            let loss = (w.as_tensor().sqr().unwrap().sum_all().unwrap() * 10.0).unwrap();
            let mut grads = Grads::new();
            accumulate(&mut grads, &vars, &loss.backward().unwrap()).unwrap();
            opt.step(&vars, &grads, 0.01).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        opt.save(dir.path()).unwrap();
        let back = AdamW::load(dir.path(), &vars, opt.config.clone()).unwrap();
        assert_eq!(back.steps(), 3);
        let (m0, _) = &opt.moments["b"];
        let (m1, _) = &back.moments["b"];
        assert_eq!(m0.to_vec1::<f32>().unwrap(), m1.to_vec1::<f32>().unwrap());
        // Clipped moments: |m| can never exceed the clip norm.
        let m: Vec<f32> = m0.to_vec1().unwrap();
        assert!(m.iter().map(|x| x * x).sum::<f32>().sqrt() <= 1.0 + 1e-5);
    }

    #[test]
    fn warmup_then_cosine() {
        assert!((learning_rate(1.0, 0, 10, 0, 0.0) - 0.1).abs() < 1e-12);
        assert_eq!(learning_rate(1.0, 50, 10, 0, 0.0), 1.0);
        assert!((learning_rate(1.0, 10, 10, 110, 0.1) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, 110, 10, 110, 0.1) - 0.1).abs() < 1e-12);
    }
}
