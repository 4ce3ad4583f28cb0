//! `oxrl eval`: samplers side by side on held-out problems (greedy by default), as a table and
//! as JSON.

use super::sampling_flags::SamplingFlags;
use crate::{model_arg, progress};
use anyhow::Context;
use rollout::config::{at_least, real, ConfigError, Interval};
use rollout::ttc::{self, PowerParams, Sampler, SamplerReport, SamplerSpecError, TtcOptions};
use std::path::PathBuf;
use std::str::FromStr;

/// One `--sampler` value: one sampler or a comma-separated list (`per-prompt:N,STEPS` keeps
/// its comma).
#[derive(Clone)]
struct SamplerList(Vec<Sampler>);

impl FromStr for SamplerList {
    type Err = SamplerSpecError;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        ttc::parse_list(list).map(SamplerList)
    }
}

/// The help text after the options: every sampler and what the report holds.
const SAMPLERS: &str = "\
Samplers (repeat --sampler, or separate with commas; all run on the same problems):
  greedy             argmax decoding
  sample             one sample at --temperature / --top-p / --top-k / --min-p
  beam:W             beam search of width W, best total log-prob
  beam-mean:W        beam search, best mean log-prob per token (length-normalised)
  best-of:N          of N samples, the highest total log-prob (under the model, T = 1)
  best-of-mean:N     of N samples, the highest mean log-prob per token
  best-of-rm:N       of N samples, the one the reward model --rm DIR scores highest
                     (`oxrl rm train`; docs/reward-model.md)
  best-of-oracle:N   of N samples, a correct one if any: an upper bound (= pass@N)
  majority:N         the answer most of N samples give (the task's verifier extracts it)
  pass:N             N samples: accuracy is their mean reward (pass@1), plus pass@k
  power, power:N     power sampling (Karan & Du 2025): 1 or N chains whose target is
                     p(x)^alpha, proposals at temperature 1/alpha (--alpha, --block,
                     --mcmc-steps)
  per-prompt:N,STEPS per-prompt optimization (test-time RL, TTRL): for each prompt alone,
                     from the model's weights, STEPS learner steps each on N samples
                     rewarded 1 if their answer is the majority answer of the N (no
                     reference answer), then the greedy answer (--per-prompt-lr)

Samplers with the same N share one set of draws. Each row reports accuracy, unbiased pass@k
for each --k up to its samples per problem, tokens generated (all samples, beams, MCMC
proposals and per-prompt's training samples) and seconds. The last stdout line is the JSON
report (also written to --json):
{\"model\", \"task\", \"n\", \"max_new_tokens\", \"seed\", \"samplers\": [{\"sampler\", \"accuracy\",
\"pass_at_k\", \"tokens\", \"wall_s\", ...}], \"wall_s\"}. See docs/test-time-compute.md.";

/// Arguments of `oxrl eval`.
#[derive(clap::Args)]
#[command(after_help = SAMPLERS)]
pub struct Args {
    /// Model directory, or `default` for the embedded default.
    #[arg(long, default_value = model_arg::DEFAULT_MODEL)]
    model: String,
    /// Task spec: `addition`, `addition:3`, `multiplication`, `countdown`, `sorting`, or a
    /// JSONL file (`FILE.jsonl`, `FILE.jsonl@exact`).
    #[arg(long, default_value = "addition:2")]
    task: String,
    /// A JSONL dataset of {"prompt", "answer"} lines instead of --task (`FILE.jsonl`, scored
    /// by `numeric`, or `FILE.jsonl@VERIFIER`).
    #[arg(long, conflicts_with = "task")]
    data: Option<String>,
    /// Number of held-out problems (all of a dataset's if it has fewer).
    #[arg(long, default_value_t = 500)]
    n: usize,
    /// Sampler(s) to compare; see the list below.
    #[arg(long = "sampler", default_value = "greedy")]
    samplers: Vec<SamplerList>,
    /// Length budget of every completion.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// How sample / best-of / majority / pass draw their samples.
    #[command(flatten)]
    sampling: SamplingFlags,
    /// The k of pass@k (comma-separated); default 1 and each sampler's N.
    #[arg(long = "k", value_delimiter = ',')]
    ks: Vec<usize>,
    /// Power sampling: the target is p(x)^alpha.
    #[arg(long, default_value_t = 4.0)]
    alpha: f32,
    /// Power sampling: block size B (tokens added before each round of MCMC steps).
    #[arg(long, default_value_t = 192)]
    block: usize,
    /// Power sampling: Metropolis-Hastings steps after each block.
    #[arg(long, default_value_t = 10)]
    mcmc_steps: usize,
    /// per-prompt:N,STEPS: the learning rate of its AdamW steps (the rest of the update is
    /// the run config's `[update]` default, without warm-up).
    #[arg(long, default_value_t = learner::PER_PROMPT_LR)]
    per_prompt_lr: f64,
    /// best-of-rm:N: the reward model that ranks the samples (a directory `oxrl rm train`
    /// wrote; the policy's tokenizer).
    #[arg(long)]
    rm: Option<PathBuf>,
    /// Sequences decoded together (prompts x samples per prompt).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl Args {
    /// Refuses numbers that cannot be meant (`--n 0`, a NaN temperature...), naming the flag.
    fn validate(&self) -> Result<(), ConfigError> {
        at_least("--n", self.n as u64, 1)?;
        at_least("--batch", self.batch as u64, 1)?;
        at_least("--block", self.block as u64, 1)?;
        for &k in &self.ks {
            at_least("--k", k as u64, 1)?;
        }
        real("--alpha", f64::from(self.alpha), Interval::POSITIVE)?;
        real("--per-prompt-lr", self.per_prompt_lr, Interval::POSITIVE)?;
        self.sampling.check(self.max_new_tokens, self.seed)
    }
}

/// The task to score: the `--data` file (checked to be JSONL), else `--task`.
fn task_spec(a: &Args) -> anyhow::Result<String> {
    let Some(data) = &a.data else {
        return Ok(a.task.clone());
    };
    let path = data.rsplit_once('@').map_or(data.as_str(), |(p, _)| p);
    anyhow::ensure!(
        path.ends_with(".jsonl"),
        "--data takes a .jsonl file (optionally FILE.jsonl@VERIFIER), got {data:?}"
    );
    Ok(data.clone())
}

/// What `per-prompt:N,STEPS` trains, when one of `samplers` is that: a copy of `m`'s
/// weights, reset before every prompt.
fn per_prompt_learner(
    a: &Args,
    m: &policy::ModelDir,
    samplers: &[Sampler],
) -> anyhow::Result<Option<learner::PerPromptLearner>> {
    if !samplers.iter().any(Sampler::needs_learner) {
        return Ok(None);
    }
    let model = learner::TrainableModel::new(m.config.clone(), m.tokenizer.clone(), &m.weights)?;
    let update = learner::per_prompt_update(a.per_prompt_lr);
    Ok(Some(learner::PerPromptLearner::new(model, update)?))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let spec = task_spec(&a)?;
    a.validate()?;
    let samplers: Vec<Sampler> = a.samplers.iter().flat_map(|l| l.0.clone()).collect();
    if let (Some(s), None) = (samplers.iter().find(|s| s.needs_scorer()), &a.rm) {
        anyhow::bail!(
            "--sampler {s} ranks samples by a reward model: give one with --rm DIR \
             (made by `oxrl rm train`)"
        );
    }
    let m = model_arg::load(&a.model)?;
    let rm = match &a.rm {
        Some(dir) => Some(load_rm(dir, &m)?),
        None => None,
    };
    // A file given with --data is what the user wants scored: all of it, not a held-out slice.
    let split = if a.data.is_some() {
        tasks::DatasetSplit::Whole
    } else {
        tasks::DatasetSplit::default()
    };
    let source = tasks::from_spec_split(&spec, a.seed, &tasks::VerifierRegistry::new(), &split)
        .with_context(|| format!("loading task {spec:?}"))?;
    let policy = m.policy()?.for_sampling()?;
    let mut per_prompt = per_prompt_learner(&a, &m, &samplers)?;
    let opts = TtcOptions {
        sampling: a.sampling.params(a.max_new_tokens, m.eos_ids(), a.seed),
        ks: a.ks.clone(),
        power: PowerParams {
            alpha: a.alpha,
            block: a.block,
            mcmc_steps: a.mcmc_steps,
            ..Default::default()
        },
        batch_rows: a.batch,
    };
    let started = std::time::Instant::now();
    // Samplers run one after another; the bar shows the running one's problems.
    let pb = progress::bar(a.n as u64, "eval");
    let (running, index) = (
        std::cell::RefCell::new(String::new()),
        std::cell::Cell::new(0),
    );
    let reports = ttc::evaluate_with_progress(
        &policy,
        &m.tokenizer,
        source.as_ref(),
        a.n,
        &samplers,
        &opts,
        ttc::Lent {
            learner: per_prompt
                .as_mut()
                .map(|l| l as &mut dyn ttc::TestTimeLearner),
            scorer: rm.as_ref().map(|r| r as &dyn ttc::SampleScorer),
        },
        &|sampler, done, n| {
            if *running.borrow() != sampler {
                *running.borrow_mut() = sampler.to_string();
                index.set(index.get() + 1);
                pb.reset();
                pb.set_message(format!(
                    "{sampler} (sampler {}/{})",
                    index.get(),
                    samplers.len()
                ));
            }
            pb.set_length(n as u64);
            pb.set_position(done as u64);
        },
    )?;
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    print_table(&reports, &a.model);
    let n = reports.first().map_or(0, |r| r.n);
    let json = serde_json::json!({
        "model": a.model,
        "task": source.name(),
        "n": n,
        "max_new_tokens": a.max_new_tokens,
        "seed": a.seed,
        "samplers": reports,
        "wall_s": secs,
    });
    println!("{json}");
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The reward model in `dir`, checked to read the policy's tokens.
fn load_rm(dir: &std::path::Path, m: &policy::ModelDir) -> anyhow::Result<policy::RewardModel> {
    let rm = policy::RewardModelDir::load(dir, &candle_core::Device::Cpu, candle_core::DType::F32)
        .with_context(|| format!("loading reward model {}", dir.display()))?;
    let probe = "12+34=46\n";
    anyhow::ensure!(
        rm.config.vocab_size == m.config.vocab_size
            && rm.tokenizer.encode(probe)? == m.tokenizer.encode(probe)?,
        "reward model {} has another tokenizer than the model: it must be trained for this \
         model's tokens (oxrl rm train --policy ...)",
        dir.display()
    );
    Ok(rm.model()?)
}

fn print_table(reports: &[SamplerReport], model: &str) {
    let Some(first) = reports.first() else {
        return;
    };
    println!("model {model}, task {}, {} problems", first.task, first.n);
    let mut ks: Vec<usize> = reports
        .iter()
        .flat_map(|r| r.pass_at_k.keys().copied())
        .collect();
    ks.sort_unstable();
    ks.dedup();
    let mut head = format!("{:<26} {:>7} {:>9}", "sampler", "samples", "accuracy");
    for k in &ks {
        head += &format!(" {:>9}", format!("pass@{k}"));
    }
    head += &format!(" {:>10} {:>9} {:>8}", "tokens", "tok/prob", "secs");
    println!("{head}");
    for r in reports {
        let name = if r.upper_bound {
            format!("{} (oracle)", r.sampler)
        } else {
            r.sampler.clone()
        };
        let mut row = format!(
            "{name:<26} {:>7} {:>9.3}",
            r.samples_per_problem, r.accuracy
        );
        for k in &ks {
            row += &match r.pass_at_k.get(k) {
                Some(p) => format!(" {p:>9.3}"),
                None => format!(" {:>9}", "-"),
            };
        }
        row += &format!(
            " {:>10} {:>9.1} {:>8.1}",
            r.tokens, r.tokens_per_problem, r.wall_s
        );
        if let Some(rate) = r.acceptance_rate {
            row += &format!("  (MCMC acceptance {rate:.3})");
        }
        println!("{row}");
    }
    for e in first.examples.iter().take(3) {
        println!(
            "  {}: {:?} -> {:?} ({})",
            first.sampler, e.prompt, e.completion, e.reward
        );
    }
}
