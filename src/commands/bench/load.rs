//! Load suite: M simulated actors (no model) against a real coordinator and learner on
//! loopback for S seconds: accepted groups per second, lease latency, errors, lost and
//! duplicated groups, and the servers' memory from the start of the steady state to the end.
//!
//! The coordinator and learner run as child processes of this binary (as `oxrl run` starts
//! them), so each one's RSS is its own. The actors run in this process, each with its own
//! connections. After S seconds every actor finishes the lease in hand and leaves; then the
//! learner's last partial batch is topped up with filler groups until it has trained (or
//! dropped as stale) every group it accepted, so nothing is left uncounted in its queue.

mod servers;
mod sim_actor;
mod tally;

use anyhow::Context;
use proto::transport::Security;
use servers::{trained, Server, Trained};
use sim_actor::{Shape, SimActor};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally::{Summary, Tally};
use tokio::sync::watch;

#[derive(clap::Args)]
pub struct Args {
    /// Simulated actors.
    #[arg(long, default_value_t = 64)]
    actors: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Groups per optimizer step (the learner's queue holds as many).
    #[arg(long, default_value_t = 16)]
    prompts_per_step: usize,
    /// Prompts per lease.
    #[arg(long, default_value_t = 1)]
    prompts_per_lease: u32,
    /// Samples per group.
    #[arg(long, default_value_t = 4)]
    group_size: usize,
    /// Completion tokens per sample, at most.
    #[arg(long, default_value_t = 8)]
    tokens: usize,
    /// Lag bound k of the run.
    #[arg(long, default_value_t = 8)]
    max_lag: u64,
    /// Every Nth lease of an actor pushes a group twice (0 = never); the copy must come
    /// back `Duplicate`.
    #[arg(long, default_value_t = 10)]
    resend_every: u64,
    /// Train pool size; 0: an endless (unbounded) procedural task, for the soak.
    #[arg(long, default_value_t = 1024)]
    train_size: u64,
    /// The learner checkpoints every this many steps (0: never); a checkpoint is what lets
    /// the coordinator and the learner forget delivered groups.
    #[arg(long, default_value_t = 0)]
    checkpoint_every: u64,
}

/// Memory of one server at the start of the steady state and at the end.
#[derive(Debug, Clone, Copy, Default)]
struct Rss {
    start: f64,
    end: f64,
}

impl Rss {
    fn ratio(&self) -> f64 {
        self.end / self.start.max(1e-9)
    }
}

/// Everything the report shows.
struct Report {
    elapsed_s: f64,
    accepted_in_window: u64,
    tally: Summary,
    trained: Trained,
    fillers: u64,
    learner_accepted: Option<u64>,
    leases_expired: u64,
    coordinator_rss: Rss,
    learner_rss: Rss,
    clean_exit: bool,
}

impl Report {
    fn groups_per_s(&self) -> f64 {
        self.accepted_in_window as f64 / self.elapsed_s.max(1e-9)
    }

    /// Groups of completed leases the learner never accepted, plus groups it accepted but
    /// neither trained nor dropped as stale.
    fn lost(&self) -> u64 {
        self.tally.completed_not_accepted
            + self.tally.accepted.saturating_sub(self.trained.accounted())
    }

    /// Groups accepted more than once, or trained more often than accepted.
    fn duplicated(&self) -> u64 {
        self.tally.accepted_twice + self.trained.accounted().saturating_sub(self.tally.accepted)
    }

    fn errors(&self) -> u64 {
        let t = &self.tally;
        let learner_disagrees = self.learner_accepted.is_some_and(|n| n != t.accepted);
        t.rpc_errors
            + t.rejected
            + t.completions_refused
            + t.missing_acks
            + (t.resent - t.resent_acked_duplicate)
            + self.leases_expired
            + u64::from(learner_disagrees)
            + u64::from(!self.clean_exit)
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.actors > 0, "--actors must be at least 1");
    anyhow::ensure!(
        a.seconds > 0.0 && a.seconds.is_finite(),
        "--seconds must be a positive number"
    );
    anyhow::ensure!(
        a.prompts_per_step > 0 && a.prompts_per_lease > 0 && a.group_size >= 2 && a.tokens > 0,
        "--prompts-per-step, --prompts-per-lease and --tokens must be at least 1, --group-size at least 2"
    );
    let dir = std::env::temp_dir().join(format!("oxrl-bench-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let pb = crate::progress::spinner("bench load");
    let report = rt.block_on(load(&a, &dir, &pb));
    pb.finish_and_clear();
    rt.shutdown_timeout(Duration::from_secs(5));
    let report = report?;
    let _ = std::fs::remove_dir_all(&dir);
    print(&a, &report);
    Ok(())
}

/// The run config the servers share: a learner that never reaches its last step on its own.
fn write_config(a: &Args, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let mut cfg = learner::RunConfig {
        steps: u64::from(u32::MAX),
        prompts_per_step: a.prompts_per_step,
        group_size: a.group_size,
        eval_every: 0,
        checkpoint_every: a.checkpoint_every,
        train_size: a.train_size,
        ..Default::default()
    };
    cfg.sampling.max_new_tokens = a.tokens;
    cfg.update.max_lag = a.max_lag;
    cfg.update.warmup = 0;
    let p = &mut cfg.pipeline;
    p.actors = a.actors;
    p.prompts_per_lease = a.prompts_per_lease as usize;
    p.learner_queue = a.prompts_per_step;
    // Heartbeats keep an actor that waits on backpressure alive; a slow learner must not get
    // actors declared dead or leases expired.
    p.heartbeat_interval_ms = 250;
    p.actor_timeout_s = 30.0;
    p.lease_timeout_s = 120.0;
    let path = dir.join("config.toml");
    std::fs::write(&path, toml::to_string(&cfg)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

async fn load(a: &Args, dir: &Path, pb: &indicatif::ProgressBar) -> anyhow::Result<Report> {
    pb.set_message("starting the coordinator and the learner");
    let config = write_config(a, dir)?;
    let vocab_size = crate::model_arg::load(crate::model_arg::DEFAULT_MODEL)?
        .config
        .vocab_size as u32;
    let (coordinator, learner, url) = start_servers(&config, dir).await?;
    let run_dir = dir.join("run");
    let shape = Arc::new(Shape {
        group_size: a.group_size,
        max_tokens: a.tokens,
        prompts_per_lease: a.prompts_per_lease,
        vocab_size,
        resend_every: a.resend_every,
    });
    let tally = Arc::new(Tally::default());
    let security = Security::default();
    pb.set_message(format!("{} simulated actors joining", a.actors));
    let actors = join_actors(a.actors, &security, &url, &shape, &tally).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let running: Vec<_> = actors
        .into_iter()
        .map(|actor| tokio::spawn(actor.run(stop_rx.clone())))
        .collect();

    // Steady state: past the first fifth of the run (model loaded, buffers warm).
    let window = Duration::from_secs_f64(a.seconds);
    pb.set_message(format!("warming up ({:.0} s)", a.seconds * 0.2));
    tokio::time::sleep_until((started + window.mul_f64(0.2)).into()).await;
    let rss_start = (coordinator.rss_mib(), learner.rss_mib());
    pb.set_message(format!("measuring under load ({:.0} s)", a.seconds * 0.8));
    tokio::time::sleep_until((started + window).into()).await;
    let rss_end = (coordinator.rss_mib(), learner.rss_mib());
    let accepted_in_window = tally.accepted();
    let elapsed_s = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    pb.set_message("finishing leases, draining the learner's queue");
    for actor in running {
        tokio::time::timeout(Duration::from_secs(120), actor)
            .await
            .context("a simulated actor did not finish its last lease within 120 s")??;
    }

    let metrics = run_dir.join("metrics.jsonl");
    let fillers = drain(&security, &url, &shape, &tally, &metrics).await?;
    let trained = trained(&metrics)?;
    let status = proto::coordinator_client::CoordinatorClient::new(security.channel(&url).await?)
        .status(proto::StatusRequest {})
        .await?
        .into_inner();
    let learner_status = learner.stop(Duration::from_secs(60)).await?;
    let coordinator_status = coordinator.stop(Duration::from_secs(20)).await?;
    let learner_accepted = std::fs::read_to_string(run_dir.join("learner_summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["accepted"].as_u64());
    let rss = |start: Option<f64>, end: Option<f64>| Rss {
        start: start.unwrap_or(0.0),
        end: end.unwrap_or(0.0),
    };
    Ok(Report {
        elapsed_s,
        accepted_in_window,
        tally: tally.summary(),
        trained,
        fillers,
        learner_accepted,
        leases_expired: status.leases_expired,
        coordinator_rss: rss(rss_start.0, rss_end.0),
        learner_rss: rss(rss_start.1, rss_end.1),
        clean_exit: learner_status.success() && coordinator_status.success(),
    })
}

/// The real coordinator (with `config`) and learner (writing `dir/run`) as child processes,
/// and the coordinator's URL.
async fn start_servers(config: &Path, dir: &Path) -> anyhow::Result<(Server, Server, String)> {
    let s = |v: &str| v.to_string();
    let coordinator = Server::start(
        "coordinator",
        &[
            s("coordinator"),
            s("--listen"),
            s("127.0.0.1:0"),
            s("--config"),
            config.display().to_string(),
        ],
        dir.join("coordinator.log"),
    )
    .await?;
    let url = format!("http://{}", coordinator.addr);
    let learner = Server::start(
        "learner",
        &[
            s("learner"),
            s("--coordinator"),
            url.clone(),
            s("--listen"),
            s("127.0.0.1:0"),
            s("--out"),
            dir.join("run").display().to_string(),
        ],
        dir.join("learner.log"),
    )
    .await?;
    Ok((coordinator, learner, url))
}

/// `count` simulated actors registered with the coordinator at `url`.
async fn join_actors(
    count: usize,
    security: &Security,
    url: &str,
    shape: &Arc<Shape>,
    tally: &Arc<Tally>,
) -> anyhow::Result<Vec<SimActor>> {
    let mut actors = Vec::with_capacity(count);
    for i in 0..count {
        let actor = SimActor::join(
            format!("sim-{i}"),
            security,
            url,
            shape.clone(),
            tally.clone(),
            i as u64 + 1,
        )
        .await
        .with_context(|| format!("simulated actor {i} joining"))?;
        actors.push(actor);
    }
    Ok(actors)
}

/// Tops up the learner's last partial batch, one single-prompt lease at a time, until it
/// has taken every accepted group off its queue; returns the filler groups pushed.
async fn drain(
    security: &Security,
    url: &str,
    shape: &Arc<Shape>,
    tally: &Arc<Tally>,
    metrics: &Path,
) -> anyhow::Result<u64> {
    let filler_shape = Arc::new(Shape {
        resend_every: 0,
        ..Shape::clone(shape)
    });
    let mut filler = SimActor::join(
        "filler".into(),
        security,
        url,
        filler_shape,
        tally.clone(),
        0,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut fillers = 0;
    let mut last = trained(metrics)?.accounted();
    let mut since = Instant::now();
    while Instant::now() < deadline {
        let accounted = trained(metrics)?.accounted();
        if accounted >= tally.accepted() {
            break;
        }
        if accounted != last {
            (last, since) = (accounted, Instant::now());
        } else if since.elapsed() > Duration::from_secs(1) {
            // The learner is idle with a partial batch: one more group.
            if let sim_actor::Cycle::Delivered = filler.cycle(1).await {
                fillers += 1;
            }
            since = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    filler.leave();
    Ok(fillers)
}

fn print(a: &Args, r: &Report) {
    let t = &r.tally;
    println!(
        "load: {} simulated actors x {:.0} s against a coordinator and a learner (child processes, loopback)",
        a.actors, a.seconds
    );
    println!(
        "{:<22} {} (leases completed for {} groups)",
        "groups accepted", t.accepted, t.completed
    );
    println!("{:<22} {:.1}", "groups/s accepted", r.groups_per_s());
    println!(
        "{:<22} {} in {} steps ({} dropped stale, {} zero-variance, {} filler groups to finish the last batch)",
        "groups trained", r.trained.groups, r.trained.steps, r.trained.dropped_stale, r.trained.zero_variance, r.fillers
    );
    println!(
        "{:<22} p50 {:.2} ms, p99 {:.2} ms ({} granted, {} refused)",
        "lease latency", t.lease_ms_p50, t.lease_ms_p99, t.leases, t.refusals
    );
    println!(
        "{:<22} {} (rpc {}, rejected {}, completions refused {}, missing acks {}, leases expired {})",
        "errors",
        r.errors(),
        t.rpc_errors,
        t.rejected,
        t.completions_refused,
        t.missing_acks,
        r.leases_expired
    );
    for e in &t.first_errors {
        println!("{:<22} {e}", "");
    }
    println!("{:<22} {}", "lost groups", r.lost());
    println!(
        "{:<22} {} ({} pushed twice on purpose, {} answered duplicate)",
        "duplicated groups",
        r.duplicated(),
        t.resent,
        t.resent_acked_duplicate
    );
    for (name, m) in [
        ("coordinator RSS", r.coordinator_rss),
        ("learner RSS", r.learner_rss),
    ] {
        println!(
            "{name:<22} {:.1} MiB -> {:.1} MiB ({:.3}x)",
            m.start,
            m.end,
            m.ratio()
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "suite": "load", "actors": a.actors, "seconds": a.seconds,
            "prompts_per_step": a.prompts_per_step, "prompts_per_lease": a.prompts_per_lease,
            "group_size": a.group_size,
            "groups_accepted": t.accepted, "groups_completed": t.completed, "groups_per_s": r.groups_per_s(),
            "groups_trained": r.trained.groups, "steps": r.trained.steps,
            "dropped_stale": r.trained.dropped_stale, "filler_groups": r.fillers,
            "lease_latency_ms_p50": t.lease_ms_p50, "lease_latency_ms_p99": t.lease_ms_p99,
            "leases": t.leases, "lease_refusals": t.refusals,
            "errors": r.errors(), "rpc_errors": t.rpc_errors, "rejected_groups": t.rejected,
            "completions_refused": t.completions_refused, "missing_acks": t.missing_acks,
            "leases_expired": r.leases_expired, "clean_exit": r.clean_exit,
            "lost_groups": r.lost(), "duplicated_groups": r.duplicated(),
            "resent_groups": t.resent, "resent_acked_duplicate": t.resent_acked_duplicate,
            "coordinator_rss_mib_start": r.coordinator_rss.start, "coordinator_rss_mib_end": r.coordinator_rss.end,
            "coordinator_rss_ratio": r.coordinator_rss.ratio(),
            "learner_rss_mib_start": r.learner_rss.start, "learner_rss_mib_end": r.learner_rss.end,
            "learner_rss_ratio": r.learner_rss.ratio(),
        })
    );
}
