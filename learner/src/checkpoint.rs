//! Run checkpoints: `DIR/checkpoints/step-N/` holds the Hugging Face weights, the
//! optimizer state and `state.json` (step, version, seed, wall time), enough to resume with
//! the same version numbers and the same sampling streams.
//!
//! Weights that are not finite are never written ([`ensure_finite`]): a step that made them
//! NaN is an error naming it, and the run's last finite checkpoint stays the latest.

use crate::error::{LearnerError, Result};
use crate::optim::AdamW;
use crate::params::TrainableModel;
use candle_core::DType;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Counters that continue across a resume. Sampling seeds derive from `(seed, step)`, so
/// these are the whole RNG state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub step: u64,
    pub version: u64,
    pub seed: u64,
    pub wall_s: f64,
}

/// Refuses weights holding NaN or inf after `step`, naming the first such parameter. The
/// loops call it after every optimizer step; every save and publish is guarded by it too.
pub fn ensure_finite(model: &TrainableModel, step: u64) -> Result<()> {
    for (name, var) in model.vars() {
        // NaN or inf anywhere makes the sum of magnitudes NaN or inf.
        let total = var
            .as_tensor()
            .abs()?
            .sum_all()?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?;
        if !total.is_finite() {
            return Err(LearnerError::NonFiniteWeights {
                parameter: name.clone(),
                at: format!("step {step}"),
            });
        }
    }
    Ok(())
}

/// Writes the run's final weights (`DIR/final`), if they are finite.
pub fn save_final(run_dir: &Path, model: &TrainableModel, step: u64) -> Result<()> {
    ensure_finite(model, step)?;
    model.save(&run_dir.join("final"))
}

/// Writes a checkpoint of `model`, `opt` and `state`; returns its directory. Weights that are
/// not finite are refused before anything is written.
pub fn save(
    run_dir: &Path,
    model: &TrainableModel,
    opt: &AdamW,
    state: &RunState,
) -> Result<PathBuf> {
    ensure_finite(model, state.step)?;
    let dir = run_dir
        .join("checkpoints")
        .join(format!("step-{}", state.step));
    // Write into a temporary directory and rename, so a crash never leaves half a checkpoint.
    let tmp = run_dir
        .join("checkpoints")
        .join(format!(".tmp-step-{}", state.step));
    let _ = std::fs::remove_dir_all(&tmp);
    model.save(&tmp)?;
    opt.save(&tmp)?;
    let path = tmp.join("state.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(state).expect("state serialises"),
    )
    .map_err(|e| LearnerError::io(&path, e))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| LearnerError::io(&dir, e))?;
    Ok(dir)
}

/// The newest complete checkpoint under `run_dir`, if any.
pub fn latest(run_dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(run_dir.join("checkpoints")).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step: u64 = name.strip_prefix("step-")?.parse().ok()?;
            e.path()
                .join("state.json")
                .exists()
                .then_some((step, e.path()))
        })
        .max_by_key(|(s, _)| *s)
        .map(|(_, p)| p)
}

/// Reads a checkpoint's `state.json`.
pub fn load_state(dir: &Path) -> Result<RunState> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| LearnerError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| LearnerError::Checkpoint {
        path,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::weights::EncodedVersion;
    use candle_core::Tensor;
    use policy::{random_weights, tokenizer::char_tokenizer, ModelConfig};

    fn tiny_model() -> TrainableModel {
        let cfg = ModelConfig::tiny(char_tokenizer().vocab_size(), 16, 1, 2, 1);
        let device = candle_core::Device::Cpu;
        let weights = random_weights(&cfg, 3, &device).unwrap();
        TrainableModel::new(cfg, char_tokenizer(), &weights).unwrap()
    }

    /// Forces one parameter to NaN, as a diverged step would.
    fn poison(model: &TrainableModel) -> String {
        let (name, var) = model.vars().iter().next().unwrap();
        let t = var.as_tensor();
        let nan = Tensor::full(f32::NAN, t.shape(), t.device()).unwrap();
        var.set(&nan).unwrap();
        name.clone()
    }

    fn state(step: u64) -> RunState {
        RunState {
            step,
            version: step,
            seed: 0,
            wall_s: 0.0,
        }
    }

    #[test]
    fn non_finite_weights_are_never_saved_nor_published() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_model();
        let opt = AdamW::new(crate::AdamWConfig::default());
        ensure_finite(&model, 1).unwrap();
        let kept = save(dir.path(), &model, &opt, &state(1)).unwrap();

        let parameter = poison(&model);
        let err = ensure_finite(&model, 2).unwrap_err();
        assert!(
            matches!(&err, LearnerError::NonFiniteWeights { parameter: p, at } if *p == parameter && at == "step 2"),
            "{err}"
        );
        assert!(err.to_string().contains("step 2"), "{err}");
        // The checkpoint save is refused before anything is written.
        let err = save(dir.path(), &model, &opt, &state(2)).unwrap_err();
        assert!(
            matches!(err, LearnerError::NonFiniteWeights { .. }),
            "{err}"
        );
        let checkpoints: Vec<String> = std::fs::read_dir(dir.path().join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(checkpoints, ["step-1"], "nothing of step 2 on disk");
        assert_eq!(
            latest(dir.path()),
            Some(kept),
            "the last finite checkpoint stays"
        );
        // Nor the final weights...
        assert!(save_final(dir.path(), &model, 2).is_err());
        assert!(!dir.path().join("final").exists());
        // ...nor a published version.
        let err = EncodedVersion::encode(2, 1, &model).err().expect("refused");
        assert!(err.to_string().contains("version 2"), "{err}");
    }
}
