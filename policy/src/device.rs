//! Which device a model runs on, and in which dtype its body computes.
//!
//! `cpu` (the default) runs everything in fp32, as oxrl always has. `cuda` / `cuda:N` needs an
//! oxrl built with the `cuda` feature (candle's CUDA backend); the body of the model then
//! computes in bf16 while the LM head and log-softmax stay in fp32 (see `model.rs`). A build
//! without the feature answers a request for CUDA with an error that says how to rebuild.

use crate::error::{PolicyError, Result};
use candle_core::{DType, Device};
use std::fmt;
use std::str::FromStr;

/// Whether this build has candle's CUDA backend (the `cuda` feature).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// The environment variable tests read to pick their device (`cpu` when unset).
pub const TEST_DEVICE_ENV: &str = "OXRL_TEST_DEVICE";

/// The message for a CUDA request on a build without CUDA.
pub const NOT_BUILT_WITH_CUDA: &str =
    "this oxrl was built without the `cuda` feature; rebuild with --features cuda";

/// A device as a flag names it: `cpu`, `cuda` (GPU 0) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            PolicyError::Device(format!(
                "{s:?} is not a device: expected cpu, cuda or cuda:N"
            ))
        };
        match s.trim() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n.parse().map(DeviceSpec::Cuda).map_err(|_| bad()),
                None => Err(bad()),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// The device named by `OXRL_TEST_DEVICE` (`cpu` when unset): how the tests that can run
    /// on a GPU (`scripts/gpu-checks.sh`) are pointed at one.
    pub fn from_test_env() -> Result<Self> {
        match std::env::var(TEST_DEVICE_ENV) {
            Ok(s) if !s.trim().is_empty() => s.parse(),
            _ => Ok(DeviceSpec::Cpu),
        }
    }

    /// Checks that this build can run on the device, without touching the device.
    pub fn check_built(&self) -> Result<()> {
        match self {
            DeviceSpec::Cuda(_) if !CUDA_BUILT => {
                Err(PolicyError::Device(NOT_BUILT_WITH_CUDA.into()))
            }
            _ => Ok(()),
        }
    }

    /// Opens the device (creates the CUDA context and stream for a GPU).
    pub fn open(&self) -> Result<Device> {
        self.check_built()?;
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => Device::new_cuda(*n)
                .map_err(|e| PolicyError::Device(format!("cuda:{n} could not be opened: {e}"))),
        }
    }

    /// The dtype the model body computes in: fp32 on a CPU, bf16 on a GPU.
    pub fn body_dtype(&self) -> DType {
        match self {
            DeviceSpec::Cpu => DType::F32,
            DeviceSpec::Cuda(_) => DType::BF16,
        }
    }

    /// Whether this names a GPU.
    pub fn is_cuda(&self) -> bool {
        matches!(self, DeviceSpec::Cuda(_))
    }
}

/// An opened device with the dtype the model body computes in.
#[derive(Debug, Clone)]
pub struct Placement {
    pub spec: DeviceSpec,
    pub device: Device,
    pub dtype: DType,
}

impl Placement {
    /// fp32 on the CPU: what every role used before GPUs.
    pub fn cpu() -> Self {
        Placement {
            spec: DeviceSpec::Cpu,
            device: Device::Cpu,
            dtype: DType::F32,
        }
    }

    /// Opens `spec` with its default body dtype.
    pub fn open(spec: DeviceSpec) -> Result<Self> {
        Ok(Placement {
            spec,
            device: spec.open()?,
            dtype: spec.body_dtype(),
        })
    }

    /// The placement `OXRL_TEST_DEVICE` names (CPU fp32 when unset).
    pub fn from_test_env() -> Result<Self> {
        Self::open(DeviceSpec::from_test_env()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_cuda_and_cuda_n() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let e = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(e.contains("expected cpu, cuda or cuda:N"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn cpu_is_fp32_and_cuda_is_bf16() {
        let p = Placement::open(DeviceSpec::Cpu).unwrap();
        assert!(p.device.is_cpu());
        assert_eq!(p.dtype, DType::F32);
        assert_eq!(DeviceSpec::Cuda(0).body_dtype(), DType::BF16);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_on_a_cpu_build_says_how_to_rebuild() {
        let e = DeviceSpec::Cuda(1).open().unwrap_err().to_string();
        assert!(e.contains("built without the `cuda` feature"), "{e}");
        assert!(e.contains("--features cuda"), "{e}");
    }
}
