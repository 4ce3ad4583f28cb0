//! `NcclCollective` (feature `nccl`): one rank per GPU of this node, over NCCL through
//! cudarc's bindings. `oxrl learner --gpus N` makes the N communicators at once
//! (`ncclCommInitAll` through [`NcclCollective::local_group`]) and drives each rank from its
//! own thread.
//!
//! The slice methods stage through one device buffer per rank that grows to the largest
//! message: copy in, reduce (or broadcast) in place on the rank's stream, copy out. The
//! tensor methods of [`Collective`] keep their host defaults for now, so gradients cross
//! host memory once each way per step; moving them onto the device (reducing candle's CUDA
//! storage directly) is the first optimisation to measure on a GPU machine.
//!
//! Not verified on a GPU yet: this module is checked against cudarc's API but has not run
//! (see the issue notes in BENCHMARKS.md's GPU section).

use super::Collective;
use crate::error::{LearnerError, Result};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, CudaViewMut};
use cudarc::nccl::{result::NcclError, Comm, ReduceOp};
use std::sync::Arc;

/// One rank of a group of GPUs in this process.
pub struct NcclCollective {
    comm: Comm,
    stream: Arc<CudaStream>,
    /// Staging buffer on this rank's GPU, grown on demand.
    staging: Option<CudaSlice<f32>>,
}

// SAFETY: a `Comm` is used by the one thread that owns its `NcclCollective`; NCCL
// communicators may move between threads as long as calls on one are not concurrent, which
// `&mut self` on every method guarantees.
unsafe impl Send for NcclCollective {}

fn nccl_error(what: &str, e: impl std::fmt::Debug) -> LearnerError {
    LearnerError::Collective(format!("NCCL {what}: {e:?}"))
}

impl NcclCollective {
    /// Communicators for GPUs `0..gpus` of this node, rank i on GPU i.
    pub fn local_group(gpus: usize) -> Result<Vec<NcclCollective>> {
        if gpus == 0 {
            return Err(LearnerError::Config("--gpus must be at least 1".into()));
        }
        let streams = (0..gpus)
            .map(|i| {
                CudaContext::new(i)
                    .map(|ctx| ctx.default_stream())
                    .map_err(|e| nccl_error(&format!("opening GPU {i}"), e))
            })
            .collect::<Result<Vec<_>>>()?;
        let comms = Comm::from_devices(streams.clone())
            .map_err(|e| nccl_error("creating the communicators", e))?;
        Ok(comms
            .into_iter()
            .zip(streams)
            .map(|(comm, stream)| NcclCollective {
                comm,
                stream,
                staging: None,
            })
            .collect())
    }

    /// Runs `op` on this rank's stream over a device copy of `data`, then copies the result
    /// back into `data`.
    fn staged(
        &mut self,
        data: &mut [f32],
        what: &str,
        op: impl FnOnce(&Comm, &mut CudaViewMut<'_, f32>) -> std::result::Result<(), NcclError>,
    ) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let n = data.len();
        if self.staging.as_ref().is_none_or(|s| s.len() < n) {
            let buf = self
                .stream
                .alloc_zeros::<f32>(n)
                .map_err(|e| nccl_error("allocating the staging buffer", e))?;
            self.staging = Some(buf);
        }
        let buf = self
            .staging
            .as_mut()
            .expect("staging buffer allocated above");
        let mut view = buf.slice_mut(..n);
        self.stream
            .memcpy_htod(&*data, &mut view)
            .map_err(|e| nccl_error("copying to the GPU", e))?;
        op(&self.comm, &mut view).map_err(|e| nccl_error(what, e))?;
        self.stream
            .memcpy_dtoh(&view, data)
            .map_err(|e| nccl_error("copying from the GPU", e))?;
        self.stream
            .synchronize()
            .map_err(|e| nccl_error("synchronising", e))
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.comm.rank()
    }

    fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    fn all_reduce_sum(&mut self, data: &mut [f32]) -> Result<()> {
        self.staged(data, "all-reduce", |comm, buf| {
            comm.all_reduce_in_place(buf, &ReduceOp::Sum).map(|_| ())
        })
    }

    fn broadcast(&mut self, data: &mut [f32]) -> Result<()> {
        self.staged(data, "broadcast", |comm, buf| {
            comm.broadcast_in_place(buf, 0).map(|_| ())
        })
    }
}
