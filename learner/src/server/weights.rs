//! A version's weights, encoded once for the wire and shared by every subscriber: whole, and
//! under a delta `weight_sync` also as the delta against the version published before it,
//! which the [`Publisher`] keeps for that.

use crate::error::{LearnerError, Result};
use crate::params::TrainableModel;
use proto::weights::{encode_as, Delta, NamedTensor};
use proto::WeightsChunk;
use rollout::config::WeightSync;

/// A version's chunks as a delta against the version `base_version` of the same lineage.
pub struct DeltaChunks {
    pub base_version: u64,
    pub chunks: Vec<WeightsChunk>,
    /// Bytes of chunk data.
    pub bytes: usize,
}

/// The chunks of one version.
pub struct EncodedVersion {
    pub version: u64,
    /// The learner life that made it (`rollout::lineage`).
    pub lineage: u64,
    /// The whole version.
    pub chunks: Vec<WeightsChunk>,
    /// Bytes of the whole version's chunk data.
    pub bytes: usize,
    /// The delta against the version published before, when the mode asks for one.
    pub delta: Option<DeltaChunks>,
}

/// What one subscriber is sent of a version.
pub struct Sending<'a> {
    pub chunks: &'a [WeightsChunk],
    pub bytes: usize,
    pub delta: bool,
}

impl EncodedVersion {
    /// Encodes the model's current weights whole, in fp32, as `version` of `lineage`;
    /// weights that are not finite are refused, never published.
    pub fn encode(version: u64, lineage: u64, model: &TrainableModel) -> Result<Self> {
        Publisher::new(WeightSync::Full).publish(version, lineage, model)
    }

    /// What a subscriber holding `held` (version, lineage; `None`: nothing) is sent: the
    /// delta when it holds exactly its base, the whole version otherwise.
    pub fn for_subscriber(&self, held: Option<(u64, u64)>) -> Sending<'_> {
        match &self.delta {
            Some(d) if held == Some((d.base_version, self.lineage)) => Sending {
                chunks: &d.chunks,
                bytes: d.bytes,
                delta: true,
            },
            _ => Sending {
                chunks: &self.chunks,
                bytes: self.bytes,
                delta: false,
            },
        }
    }
}

/// Encodes each new version in the run's `weight_sync` mode, keeping (under a delta mode) the
/// version before as the base of the next delta.
pub struct Publisher {
    mode: WeightSync,
    previous: Option<(u64, u64, Vec<NamedTensor>)>,
}

impl Publisher {
    /// A publisher for `mode`.
    pub fn new(mode: WeightSync) -> Self {
        Publisher {
            mode,
            previous: None,
        }
    }

    /// Encodes the model's current weights as `version` of `lineage`; weights that are not
    /// finite are refused, never published.
    pub fn publish(
        &mut self,
        version: u64,
        lineage: u64,
        model: &TrainableModel,
    ) -> Result<EncodedVersion> {
        let tensors = snapshot(version, model)?;
        let dtype = self.mode.dtype();
        let chunk = proto::WEIGHTS_CHUNK_BYTES;
        let chunks = encode_as(version, lineage, &tensors, dtype, None, chunk)?;
        let delta = match &self.previous {
            Some((base_version, base_lineage, base))
                if self.mode.delta() && *base_lineage == lineage && *base_version != version =>
            {
                let delta = Delta {
                    base_version: *base_version,
                    base,
                };
                // A base that no longer fits (it cannot, within a lineage) means no delta.
                encode_as(version, lineage, &tensors, dtype, Some(delta), chunk)
                    .ok()
                    .map(|chunks| DeltaChunks {
                        base_version: *base_version,
                        bytes: data_bytes(&chunks),
                        chunks,
                    })
            }
            _ => None,
        };
        let bytes = data_bytes(&chunks);
        if self.mode.delta() {
            self.previous = Some((version, lineage, tensors));
        }
        Ok(EncodedVersion {
            version,
            lineage,
            chunks,
            bytes,
            delta,
        })
    }
}

/// The model's weights sorted by name; an error naming the first that is not finite.
fn snapshot(version: u64, model: &TrainableModel) -> Result<Vec<NamedTensor>> {
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
    Ok(tensors)
}

/// Bytes of tensor data in `chunks`.
fn data_bytes(chunks: &[WeightsChunk]) -> usize {
    chunks
        .iter()
        .map(|c| match &c.part {
            Some(proto::weights_chunk::Part::Tensor(t)) => t.data.len(),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version() -> EncodedVersion {
        let header = |delta| WeightsChunk {
            part: Some(proto::weights_chunk::Part::Header(proto::WeightsHeader {
                version: 5,
                lineage: 2,
                delta,
                ..Default::default()
            })),
        };
        EncodedVersion {
            version: 5,
            lineage: 2,
            chunks: vec![header(false)],
            bytes: 100,
            delta: Some(DeltaChunks {
                base_version: 4,
                chunks: vec![header(true)],
                bytes: 10,
            }),
        }
    }

    #[test]
    fn only_a_subscriber_holding_the_base_gets_the_delta() {
        let v = version();
        let got = v.for_subscriber(Some((4, 2)));
        assert!(got.delta && got.bytes == 10);
        // Another version, another lineage, or nothing held: the whole version.
        for held in [Some((3, 2)), Some((4, 1)), Some((5, 2)), None] {
            let got = v.for_subscriber(held);
            assert!(!got.delta && got.bytes == 100, "{held:?}");
        }
    }
}
