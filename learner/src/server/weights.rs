//! A version's weights, encoded once for the wire and shared by every subscriber.

use crate::error::{LearnerError, Result};
use crate::params::TrainableModel;
use proto::weights::{encode, NamedTensor};
use proto::WeightsChunk;

/// The chunks of one version.
pub struct EncodedVersion {
    pub version: u64,
    /// The learner life that made it (`rollout::lineage`).
    pub lineage: u64,
    pub chunks: Vec<WeightsChunk>,
    pub bytes: usize,
}

impl EncodedVersion {
    /// Encodes the model's current weights as `version` of `lineage`; weights that are not
    /// finite are refused, never published.
    pub fn encode(version: u64, lineage: u64, model: &TrainableModel) -> Result<Self> {
        let mut tensors = Vec::new();
        for (name, t) in model.snapshot()? {
            let data = t.flatten_all()?.to_vec1::<f32>()?;
            if !data.iter().all(|x| x.is_finite()) {
                return Err(LearnerError::NonFiniteWeights {
                    parameter: name,
                    at: format!("version {version}"),
                });
            }
            tensors.push(NamedTensor {
                shape: t.dims().to_vec(),
                data,
                name,
            });
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        let bytes = tensors.iter().map(|t| t.data.len() * 4).sum();
        Ok(EncodedVersion {
            version,
            lineage,
            chunks: encode(version, lineage, &tensors, proto::WEIGHTS_CHUNK_BYTES),
            bytes,
        })
    }
}
