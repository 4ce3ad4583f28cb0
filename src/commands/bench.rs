//! `oxrl bench [SUITE]`: benchmarks whose figures are ratios against a baseline measured in
//! the same run, printed as a table and one JSON line each; without a suite, the decode,
//! learner, weights and pipeline suites in turn with their default settings.

mod decode;
mod journal;
mod learner_step;
mod load;
mod matmul;
mod pipeline;
mod step;
mod torch;
mod weights;
mod weights_report;
mod weights_wire;

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
    /// The learner step's matrix products alone, in candle and (`--torch`) PyTorch: the
    /// kernel's own ceiling.
    Matmul(matmul::Args),
    /// Weight streaming over gRPC (chunked, CRC-checked, reassembled) against raw loopback
    /// TCP of the same bytes.
    Weights(weights::Args),
    /// Pipelined (lag k) against on-policy (k = 0) runs: wall time, actor idle fraction.
    Pipeline(pipeline::Args),
    /// Whole synchronous RL steps (sample G per prompt, verify, update) by phase; with
    /// `--torch`, against the same steps in PyTorch + transformers.
    Step(step::Args),
    /// Simulated actors against a real coordinator and learner: groups/s, lease latency,
    /// errors, lost and duplicated groups, server memory.
    Load(load::Args),
    /// A coordinator restart's journal replay after a long run: the whole journal against
    /// the compacted one (snapshot + tail).
    Journal(journal::Args),
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.suite {
        Some(Suite::Decode(a)) => decode::run(a),
        Some(Suite::Learner(a)) => learner_step::run(a),
        Some(Suite::Weights(a)) => weights::run(a),
        Some(Suite::Pipeline(a)) => pipeline::run(a),
        Some(Suite::Load(a)) => load::run(a),
        Some(Suite::Journal(a)) => journal::run(a),
        Some(Suite::Step(a)) => step::run(a),
        Some(Suite::Matmul(a)) => matmul::run(a),
        None => {
            decode::run(defaults("decode")?)?;
            learner_step::run(defaults("learner")?)?;
            weights::run(defaults("weights")?)?;
            pipeline::run(defaults("pipeline")?)
        }
    }
}

/// Where the decode and learner suites run, and on which models.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Target {
    /// Device: cpu, cuda or cuda:N (a build with --features cuda). On a GPU the model body
    /// computes in bf16 over fp32 weights, the LM head in fp32.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Also a ~0.5 B parameter config (random weights; meant for a GPU).
    #[arg(long)]
    pub half_billion: bool,
}

impl Target {
    /// Opens the device.
    pub fn placement(&self) -> anyhow::Result<policy::device::Placement> {
        let spec: policy::device::DeviceSpec = self.device.parse()?;
        Ok(policy::device::Placement::open(spec)?)
    }
}

/// A config with random weights for the benchmarks, on the character vocabulary.
fn random_model(
    cfg: policy::ModelConfig,
    device: &candle_core::Device,
) -> anyhow::Result<(String, policy::ModelDir)> {
    let weights = policy::random_weights(&cfg, 0, device)?;
    let params = cfg.num_parameters() as f64;
    let name = if params >= 1e8 {
        format!("{:.2}B", params / 1e9)
    } else {
        format!("{:.1}M", params / 1e6)
    };
    Ok((
        name,
        policy::ModelDir {
            config: cfg,
            tokenizer: policy::tokenizer::char_tokenizer(),
            weights,
        },
    ))
}

/// The models benchmarked on the CPU: the embedded default and, with `include_large`, a
/// ~20 M parameter config.
pub(crate) fn bench_models(include_large: bool) -> anyhow::Result<Vec<(String, policy::ModelDir)>> {
    bench_models_on(include_large, false, &candle_core::Device::Cpu)
}

/// [`bench_models`] with the weights on `device`, and with `half_billion` a ~0.5 B config
/// (hidden 1024, 24 layers, 16 heads over 4 KV heads, MLP 5632: 475 M parameters).
pub(crate) fn bench_models_on(
    include_large: bool,
    half_billion: bool,
    device: &candle_core::Device,
) -> anyhow::Result<Vec<(String, policy::ModelDir)>> {
    let mut default = crate::model_arg::load(crate::model_arg::DEFAULT_MODEL)?;
    if !device.is_cpu() {
        for t in default.weights.values_mut() {
            *t = t.to_device(device)?;
        }
    }
    let mut out = vec![("default".to_string(), default)];
    let vocab = policy::tokenizer::char_tokenizer().vocab_size();
    if include_large {
        let mut cfg = policy::ModelConfig::tiny(vocab, 512, 6, 8, 4);
        cfg.intermediate_size = 1536;
        out.push(random_model(cfg, device)?);
    }
    if half_billion {
        out.push(random_model(half_billion_config(vocab), device)?);
    }
    Ok(out)
}

/// The ~0.5 B parameter config of `--half-billion`.
fn half_billion_config(vocab: usize) -> policy::ModelConfig {
    let mut cfg = policy::ModelConfig::tiny(vocab, 1024, 24, 16, 4);
    cfg.intermediate_size = 5632;
    cfg
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_half_billion_config_has_about_half_a_billion_parameters() {
        let vocab = policy::tokenizer::char_tokenizer().vocab_size();
        let n = super::half_billion_config(vocab).num_parameters();
        assert!((4.5e8..5.0e8).contains(&(n as f64)), "{n}");
    }
}
