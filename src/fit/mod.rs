//! Scaling-curve fit (DESIGN.md section 9, ScaleRL): reading a run's reward-against-compute
//! points (`series`), fitting the sigmoidal curve with uncertainty (`curve`), and drawing it
//! (`plot`), and the learning curve `oxrl run` draws (`run_curve`). `oxrl fit` (src/commands/fit.rs) puts them together; docs/fit.md has the method.

pub mod curve;
pub mod plot;
pub mod run_curve;
pub mod series;
