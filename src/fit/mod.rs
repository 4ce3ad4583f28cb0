//! Scaling-curve fit (DESIGN.md section 9, ScaleRL): reading a run's reward-against-compute
//! points (`series`), fitting the sigmoidal curve with uncertainty (`curve`), and drawing it
//! (`plot`). `oxrl fit` (src/commands/fit.rs) puts them together; docs/fit.md has the method.

pub mod curve;
pub mod plot;
pub mod series;
