//! `oxrl`: one binary, one subcommand per job. It parses the command line, loads the
//! config and calls into the libraries; nothing else lives here.

mod alloc;
mod children;
mod commands;
mod config;
mod fit;
mod model_arg;
mod progress;
mod supervise;

use clap::{Parser, Subcommand};

/// Asynchronous RL post-training for language models.
#[derive(Parser)]
#[command(name = "oxrl", version, about)]
struct Cli {
    /// Compute threads per process (candle's matmuls); on small models one thread is fastest.
    #[arg(long, global = true, env = "OXRL_THREADS", default_value_t = 1)]
    threads: usize,
    /// Log as JSON lines instead of text (filter with RUST_LOG).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// An RL training run on the embedded default or any model and task.
    Run(commands::run::Args),
    /// The coordinator role: prompt pool, leases, staleness gate, curriculum, status.
    Coordinator(commands::roles::CoordinatorArgs),
    /// The learner role: receives groups, trains, streams weights.
    Learner(commands::roles::LearnerArgs),
    /// An actor: leases prompts, samples groups, streams them to the learner.
    Actor(commands::roles::ActorArgs),
    /// Environments over the network: `oxrl env serve` serves the built-ins to remote
    /// actors (oxrl.v1.Environment).
    Env(commands::env::Args),
    /// Supervised fine-tuning on task solutions (the warm start of the default model).
    Sft(commands::sft::Args),
    /// Evaluate samplers on held-out problems: greedy, sampling, beam, best-of-N, majority
    /// vote, pass@k, power sampling.
    Eval(commands::eval::Args),
    /// Outcome reward models: `oxrl rm train` learns a verifier from the policy's own
    /// samples, saved as a Hugging Face sequence classifier (`oxrl eval --rm`).
    Rm(commands::rm::Args),
    /// Teacher-forced log-probs of texts (JSONL in, JSONL out).
    Score(commands::score::Args),
    /// Sample a completion of one prompt.
    Generate(commands::generate::Args),
    /// Benchmarks (figures as ratios against a baseline measured in the same run).
    Bench(commands::bench::Args),
    /// Fit ScaleRL's reward-against-compute curve to a run's metrics and predict its end.
    Fit(commands::fit::Args),
    /// Draw figures as PNG: `oxrl plot sweep` (accuracy against N for best-of-N samplers).
    Plot(commands::plot::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Roles that compute on tensors keep freed memory for reuse; the coordinator allocates
    // nothing large, and keeping its transients (a compaction's snapshot) would only raise
    // its resident memory for good.
    if !matches!(cli.command, Command::Coordinator(_)) {
        alloc::keep_freed_memory();
    }
    // Must happen before candle's thread pool starts.
    std::env::set_var("RAYON_NUM_THREADS", cli.threads.to_string());
    init_logging(cli.log_json);
    match cli.command {
        Command::Run(a) => commands::run::run(a),
        Command::Coordinator(a) => commands::roles::coordinator(a),
        Command::Learner(a) => commands::roles::learner(a),
        Command::Actor(a) => commands::roles::actor(a),
        Command::Env(a) => commands::env::run(a),
        Command::Sft(a) => commands::sft::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Rm(a) => commands::rm::run(a),
        Command::Score(a) => commands::score::run(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Fit(a) => commands::fit::run(a),
        Command::Plot(a) => commands::plot::run(a),
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: role logs are files (`oxrl run` sends stderr to logs/).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
