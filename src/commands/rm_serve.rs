//! `oxrl rm serve`: a reward model (`oxrl rm train`'s output) served over
//! `oxrl.v1.RewardModel` to runs whose config says `reward = { rm = "URL" }`
//! (docs/reward-model.md, "Serving"). A process like the roles: the same token and TLS flags,
//! gRPC health, `--metrics-listen`, and the `OXRL_LISTENING <addr>` line once bound.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use reward_service::{BatchLimits, RewardServer};

use super::roles::{bind, bind_metrics, block_on, shutdown_signal, ProcessArgs};

/// Arguments of `oxrl rm serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// The reward model directory (`oxrl rm train --out`): a one-label
    /// LlamaForSequenceClassification / Qwen2ForSequenceClassification.
    #[arg(long)]
    model: PathBuf,
    /// Address to listen on (port 0: the OS picks one).
    #[arg(long, default_value = "0.0.0.0:7200")]
    listen: String,
    /// Sequences scored in one forward pass at most: requests that arrive together are
    /// batched up to this (a single larger request is scored alone).
    #[arg(long, default_value_t = BatchLimits::default().max_sequences)]
    max_batch: usize,
    /// How long the first request of a batch waits for others to join it, in milliseconds.
    #[arg(long, default_value_t = BatchLimits::default().max_wait.as_millis() as u64)]
    max_wait_ms: u64,
    /// Requests waiting for the model at most; more are answered RESOURCE_EXHAUSTED (clients
    /// retry).
    #[arg(long, default_value_t = BatchLimits::default().queue)]
    queue: usize,
    /// Serve Prometheus `GET /metrics` (HTTP) on this address, e.g. 0.0.0.0:9004.
    #[arg(long)]
    metrics_listen: Option<String>,
    #[command(flatten)]
    process: ProcessArgs,
}

pub fn serve(a: ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.max_batch > 0 && a.queue > 0,
        "--max-batch ({}) and --queue ({}) must be positive",
        a.max_batch,
        a.queue
    );
    let dir =
        policy::RewardModelDir::load(&a.model, &candle_core::Device::Cpu, candle_core::DType::F32)
            .with_context(|| format!("loading the reward model {}", a.model.display()))?;
    let model = dir.model().context("building the reward model")?;
    let limits = BatchLimits {
        max_sequences: a.max_batch,
        max_wait: Duration::from_millis(a.max_wait_ms),
        queue: a.queue,
    };
    let server = RewardServer::new(model, limits);
    let security = a.process.security.load()?;
    block_on(async {
        let metrics = bind_metrics(a.metrics_listen.as_deref()).await?;
        let _metrics = metrics
            .map(|listener| server.serve_metrics(listener, &security))
            .transpose()?;
        let (listener, _) = bind(&a.listen).await?;
        server
            .serve(
                listener,
                security,
                shutdown_signal(a.process.exit_with_parent),
            )
            .await
            .context("serving the reward model")?;
        Ok(())
    })
}
