//! `oxrl bench [SUITE]`: benchmarks whose figures are ratios against a baseline measured in
//! the same run, printed as a table and one JSON line each; without a suite, the decode,
//! learner, weights and pipeline suites in turn with their default settings.

mod decode;
mod learner_step;
mod load;
mod pipeline;
mod torch;
mod weights;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    suite: Option<Suite>,
}

/// A suite's arguments at their defaults, as `oxrl bench SUITE` with no flags parses them.
fn defaults<T: clap::Args + clap::FromArgMatches>(name: &'static str) -> anyhow::Result<T> {
    let matches = T::augment_args(clap::Command::new(name)).try_get_matches_from([name])?;
    Ok(T::from_arg_matches(&matches)?)
}

#[derive(clap::Subcommand)]
enum Suite {
    /// Batched decode and teacher-forced scoring tokens/s (baseline: batch-1 decode).
    Decode(decode::Args),
    /// Learner step tokens/s: forward + backward + optimizer (baseline: forward alone).
    Learner(learner_step::Args),
    /// Weight streaming over gRPC (chunked, CRC-checked, reassembled) against raw loopback
    /// TCP of the same bytes.
    Weights(weights::Args),
    /// Pipelined (lag k) against on-policy (k = 0) runs: wall time, actor idle fraction.
    Pipeline(pipeline::Args),
    /// Simulated actors against a real coordinator and learner: groups/s, lease latency,
    /// errors, lost and duplicated groups, server memory.
    Load(load::Args),
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.suite {
        Some(Suite::Decode(a)) => decode::run(a),
        Some(Suite::Learner(a)) => learner_step::run(a),
        Some(Suite::Weights(a)) => weights::run(a),
        Some(Suite::Pipeline(a)) => pipeline::run(a),
        Some(Suite::Load(a)) => load::run(a),
        None => {
            decode::run(defaults("decode")?)?;
            learner_step::run(defaults("learner")?)?;
            weights::run(defaults("weights")?)?;
            pipeline::run(defaults("pipeline")?)
        }
    }
}

/// The models benchmarked: the embedded default and a ~20 M parameter config.
pub(crate) fn bench_models(include_large: bool) -> anyhow::Result<Vec<(String, policy::ModelDir)>> {
    let mut out = vec![(
        "default".to_string(),
        crate::model_arg::load(crate::model_arg::DEFAULT_MODEL)?,
    )];
    if include_large {
        let tok = policy::tokenizer::char_tokenizer();
        let mut cfg = policy::ModelConfig::tiny(tok.vocab_size(), 512, 6, 8, 4);
        cfg.intermediate_size = 1536;
        let weights = policy::random_weights(&cfg, 0, &candle_core::Device::Cpu)?;
        let name = format!("{:.1}M", cfg.num_parameters() as f64 / 1e6);
        out.push((
            name,
            policy::ModelDir {
                config: cfg,
                tokenizer: tok,
                weights,
            },
        ));
    }
    Ok(out)
}

/// Runs `f` `reps` times and returns the best wall time in seconds (least disturbed).
pub(crate) fn best_of(
    reps: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = std::time::Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}
