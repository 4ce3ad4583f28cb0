//! Collectives for a data-parallel learner, behind one small trait.
//!
//! [`Collective`] is what a rank of a data-parallel learner needs from its group: a sum of
//! gradients (all-reduce) and rank 0's weights on every rank (broadcast). Implementations:
//! - [`SingleProcess`]: the group of one (the default).
//! - [`TcpCollective`] (`tcp.rs`): test scaffolding, a star over TCP, so the data-parallel
//!   logic is tested on a CPU with several ranks on loopback. Not a cluster layer.
//! - `NcclCollective` (`nccl.rs`, feature `nccl`): one rank per GPU of a node over NCCL
//!   (cudarc's bindings), reducing in a device buffer; not yet run on a GPU.
//!
//! The tensor methods have host-memory defaults (copy out, reduce, copy back); keeping
//! gradients on the GPU end to end is the NCCL implementation's next step.

#[cfg(feature = "nccl")]
pub mod nccl;
mod tcp;

pub use tcp::TcpCollective;

use crate::error::Result;
use candle_core::{DType, Tensor, Var};
use std::collections::BTreeMap;

/// The operations a data-parallel learner needs from its process group.
pub trait Collective: Send {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// Element-wise sum of `data` over every rank, written back into `data` on every rank.
    fn all_reduce_sum(&mut self, data: &mut [f32]) -> Result<()>;
    /// Rank 0's `data`, written into `data` on every rank.
    fn broadcast(&mut self, data: &mut [f32]) -> Result<()>;

    /// Element-wise sum of `t` over every rank (same shape, dtype and device as `t`).
    fn all_reduce_sum_tensor(&mut self, t: &Tensor) -> Result<Tensor> {
        let mut host = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        self.all_reduce_sum(&mut host)?;
        Ok(Tensor::from_vec(host, t.shape(), t.device())?.to_dtype(t.dtype())?)
    }

    /// Rank 0's `t` on every rank (same shape, dtype and device as `t`).
    fn broadcast_tensor(&mut self, t: &Tensor) -> Result<Tensor> {
        let mut host = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        self.broadcast(&mut host)?;
        Ok(Tensor::from_vec(host, t.shape(), t.device())?.to_dtype(t.dtype())?)
    }
}

/// The trivial group of one process.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&mut self, _data: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&mut self, _data: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_tensor(&mut self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }
    fn broadcast_tensor(&mut self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }
}

/// Overwrites `vars` on every rank with rank 0's values, as one flat buffer in name order
/// (one collective call, however many tensors).
pub fn broadcast_vars(c: &mut dyn Collective, vars: &BTreeMap<String, Var>) -> Result<()> {
    if c.world_size() == 1 || vars.is_empty() {
        return Ok(());
    }
    let flat: Vec<Tensor> = vars
        .values()
        .map(|v| v.as_tensor().flatten_all())
        .collect::<std::result::Result<_, _>>()?;
    let flat = c.broadcast_tensor(&Tensor::cat(&flat, 0)?)?;
    let mut offset = 0;
    for v in vars.values() {
        let n = v.elem_count();
        v.set(&flat.narrow(0, offset, n)?.reshape(v.dims())?)?;
        offset += n;
    }
    Ok(())
}
