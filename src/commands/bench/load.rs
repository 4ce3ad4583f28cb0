//! Load suite: M simulated actors (no model) against a real coordinator and learner on
//! loopback for S seconds: leases and accepted groups per second, lease latency, errors, lost
//! and duplicated groups, each server's CPU per lease, per group and per heartbeat, and its
//! memory from the start of the steady state to the end. `--actors 64,128,...` sweeps sizes,
//! each against fresh servers, and ends with one table row per size.
//!
//! The coordinator (with its journal on, as `oxrl run` and the k8s manifests run it, unless
//! `--no-journal`) and the learner run as child processes of this binary, so each one's RSS
//! and CPU time are its own.
//! The actors run in this process, each with its own connections. Once all have joined they
//! only heartbeat for an idle window (the coordinator's cost per heartbeat), then lease for S
//! seconds, measured after the first fifth. At the end every actor finishes the lease in hand
//! and leaves; then the learner's last partial batch is topped up with filler groups until it
//! has trained (or dropped as stale) every group it accepted, so nothing is left uncounted.

mod cpu;
mod report;
mod servers;
mod sim_actor;
mod tally;
mod window;

use anyhow::Context;
use proto::transport::Security;
use servers::{trained, Server, Trained};
use sim_actor::{Shape, SimActor};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally::{Latency, Summary, Tally};
use tokio::sync::watch;
use window::{Snapshot, Window};

#[derive(clap::Args)]
pub struct Args {
    /// Simulated actors; a comma list (64,128,256) sweeps the sizes in turn, fresh servers
    /// for each.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    actors: Vec<usize>,
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
    /// Actors lease and complete but push no groups: the coordinator alone under load, not
    /// held back by the learner's training (nothing reaches the learner, so lost and
    /// duplicated groups are not counted).
    #[arg(long)]
    no_push: bool,
    /// Run the coordinator without its journal (deployments keep one): the journal's cost
    /// is the difference.
    #[arg(long)]
    no_journal: bool,
    /// Each actor's heartbeat interval (the run's `[pipeline] heartbeat_interval_ms`).
    #[arg(long, default_value_t = 250)]
    heartbeat_ms: u64,
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
    /// The anonymous part (`RssAnon`): what a leak grows, without the code pages that the
    /// first run of each path reads in.
    anon_start: f64,
    anon_end: f64,
}

impl Rss {
    fn ratio(&self) -> f64 {
        self.end / self.start.max(1e-9)
    }

    fn anon_ratio(&self) -> f64 {
        self.anon_end / self.anon_start.max(1e-9)
    }
}

/// Everything the report shows about one size.
struct Report {
    actors: usize,
    /// The actors pushed their groups to the learner (not `--no-push`).
    pushed: bool,
    /// Actors registered and heartbeating, no leases.
    idle: Window,
    /// The measured window under load (after the warm-up).
    load: Window,
    latency: Latency,
    tally: Summary,
    trained: Trained,
    fillers: u64,
    learner_accepted: Option<u64>,
    leases_expired: u64,
    coordinator_rss: Rss,
    learner_rss: Rss,
    /// The coordinator's journal at the end.
    journal_bytes: u64,
    clean_exit: bool,
}

impl Report {
    /// Acceptances: a group dropped past the lag bound is leased and accepted again.
    fn acceptances(&self) -> u64 {
        self.tally.accepted + self.tally.accepted_twice
    }

    /// Groups of completed leases the learner never accepted, plus acceptances it neither
    /// trained nor dropped as stale.
    fn lost(&self) -> u64 {
        if !self.pushed {
            return 0;
        }
        self.tally.completed_not_accepted
            + self.acceptances().saturating_sub(self.trained.accounted())
    }

    /// Groups accepted again other than after a stale drop, or groups trained (or dropped)
    /// more often than accepted.
    fn duplicated(&self) -> u64 {
        self.tally
            .accepted_twice
            .saturating_sub(self.trained.dropped_stale)
            + self.trained.accounted().saturating_sub(self.acceptances())
    }

    fn errors(&self) -> u64 {
        let t = &self.tally;
        let learner_disagrees = self
            .learner_accepted
            .is_some_and(|n| n != self.acceptances());
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
    anyhow::ensure!(
        !a.actors.is_empty() && a.actors.iter().all(|&m| m > 0),
        "--actors must be at least 1 (or a comma list of sizes, each at least 1)"
    );
    anyhow::ensure!(
        a.seconds > 0.0 && a.seconds.is_finite(),
        "--seconds must be a positive number"
    );
    anyhow::ensure!(
        a.prompts_per_step > 0 && a.prompts_per_lease > 0 && a.group_size >= 2 && a.tokens > 0,
        "--prompts-per-step, --prompts-per-lease and --tokens must be at least 1, --group-size at least 2"
    );
    anyhow::ensure!(a.heartbeat_ms >= 50, "--heartbeat-ms must be at least 50");
    let largest = a.actors.iter().copied().max().unwrap_or(1);
    cpu::ensure_open_files(cpu::open_files_for(largest))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut reports = Vec::with_capacity(a.actors.len());
    for &actors in &a.actors {
        let dir =
            std::env::temp_dir().join(format!("oxrl-bench-load-{}-{actors}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let pb = crate::progress::spinner(&format!("bench load, {actors} actors"));
        let report = rt.block_on(load(&a, actors, &dir, &pb));
        pb.finish_and_clear();
        let report = report.with_context(|| format!("the run with {actors} simulated actors"))?;
        let _ = std::fs::remove_dir_all(&dir);
        report::print(&a, &report);
        reports.push(report);
    }
    rt.shutdown_timeout(Duration::from_secs(5));
    report::table(&reports);
    Ok(())
}

/// The run config the servers share: a learner that never reaches its last step on its own.
fn write_config(a: &Args, actors: usize, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
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
    p.actors = actors;
    p.prompts_per_lease = a.prompts_per_lease as usize;
    p.learner_queue = a.prompts_per_step;
    // Heartbeats keep an actor that waits on backpressure alive; a slow learner (or a machine
    // busy with a thousand actors) must not get actors declared dead or leases expired.
    p.heartbeat_interval_ms = a.heartbeat_ms;
    p.actor_timeout_s = 30.0_f64.max(a.heartbeat_ms as f64 * 20.0 / 1e3);
    p.lease_timeout_s = 120.0;
    let path = dir.join("config.toml");
    std::fs::write(&path, toml::to_string(&cfg)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The idle window's length: long enough that the coordinator's CPU for heartbeats alone
/// is many clock ticks even for a few actors.
fn idle_seconds(seconds: f64) -> f64 {
    (seconds * 0.15).clamp(1.0, 10.0)
}

async fn load(
    a: &Args,
    actors: usize,
    dir: &Path,
    pb: &indicatif::ProgressBar,
) -> anyhow::Result<Report> {
    pb.set_message("starting the coordinator and the learner");
    let config = write_config(a, actors, dir)?;
    let vocab_size = crate::model_arg::load(crate::model_arg::DEFAULT_MODEL)?
        .config
        .vocab_size as u32;
    let journal = dir.join("coordinator.journal");
    let journaled = (!a.no_journal).then_some(journal.as_path());
    let (coordinator, learner, url) = start_servers(&config, journaled, dir).await?;
    let run_dir = dir.join("run");
    let shape = Arc::new(Shape {
        group_size: a.group_size,
        max_tokens: a.tokens,
        prompts_per_lease: a.prompts_per_lease,
        vocab_size,
        resend_every: a.resend_every,
        push: !a.no_push,
    });
    let tally = Arc::new(Tally::default());
    let security = Security::default();
    pb.set_message(format!("{actors} simulated actors joining"));
    let joined = join_actors(actors, &security, &url, &shape, &tally).await?;

    let m = measure(a, joined, &tally, &coordinator, &learner, pb).await?;

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
    Ok(Report {
        actors,
        pushed: !a.no_push,
        idle: m.idle,
        load: m.load,
        latency: m.latency,
        tally: tally.summary(),
        trained,
        fillers,
        learner_accepted,
        leases_expired: status.leases_expired,
        coordinator_rss: m.coordinator_rss,
        learner_rss: m.learner_rss,
        journal_bytes: std::fs::metadata(&journal).map_or(0, |m| m.len()),
        clean_exit: learner_status.success() && coordinator_status.success(),
    })
}

/// What the windows measured.
struct Measured {
    idle: Window,
    load: Window,
    latency: Latency,
    coordinator_rss: Rss,
    learner_rss: Rss,
}

/// The idle window (heartbeats only), then S seconds of load measured after the first
/// fifth; returns once every actor has finished the lease in hand and left.
async fn measure(
    a: &Args,
    joined: Vec<SimActor>,
    tally: &Tally,
    coordinator: &Server,
    learner: &Server,
    pb: &indicatif::ProgressBar,
) -> anyhow::Result<Measured> {
    let snapshot = || Snapshot::take(coordinator.pid(), learner.pid(), tally);
    pb.set_message("heartbeats only (the idle window)");
    let idle_start = snapshot();
    tokio::time::sleep(Duration::from_secs_f64(idle_seconds(a.seconds))).await;
    let idle = Window::between(&idle_start, &snapshot());

    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let running: Vec<_> = joined
        .into_iter()
        .map(|actor| tokio::spawn(actor.run(stop_rx.clone())))
        .collect();
    // Steady state: past the first fifth of the run (model loaded, buffers warm).
    let window = Duration::from_secs_f64(a.seconds);
    pb.set_message(format!("warming up ({:.0} s)", a.seconds * 0.2));
    tokio::time::sleep_until((started + window.mul_f64(0.2)).into()).await;
    tally.start_window();
    let rss_start = (memory(coordinator), memory(learner));
    let load_start = snapshot();
    pb.set_message(format!("measuring under load ({:.0} s)", a.seconds * 0.8));
    tokio::time::sleep_until((started + window).into()).await;
    let load = Window::between(&load_start, &snapshot());
    let latency = tally.latency();
    let rss_end = (memory(coordinator), memory(learner));
    let _ = stop_tx.send(true);
    pb.set_message("finishing leases, draining the learner's queue");
    for actor in running {
        tokio::time::timeout(Duration::from_secs(120), actor)
            .await
            .context("a simulated actor did not finish its last lease within 120 s")??;
    }
    let rss = |start: (f64, f64), end: (f64, f64)| Rss {
        start: start.0,
        end: end.0,
        anon_start: start.1,
        anon_end: end.1,
    };
    Ok(Measured {
        idle,
        load,
        latency,
        coordinator_rss: rss(rss_start.0, rss_end.0),
        learner_rss: rss(rss_start.1, rss_end.1),
    })
}

/// A server's RSS and its anonymous part, in MiB (0 where `/proc` has none).
fn memory(server: &Server) -> (f64, f64) {
    (
        server.rss_mib().unwrap_or(0.0),
        server.anon_mib().unwrap_or(0.0),
    )
}

/// The real coordinator (with `config`, and `journal` if any) and learner (writing `dir/run`) as
/// child processes, and the coordinator's URL.
async fn start_servers(
    config: &Path,
    journal: Option<&Path>,
    dir: &Path,
) -> anyhow::Result<(Server, Server, String)> {
    let s = |v: &str| v.to_string();
    let mut args = vec![
        s("coordinator"),
        s("--listen"),
        s("127.0.0.1:0"),
        s("--config"),
        config.display().to_string(),
    ];
    if let Some(journal) = journal {
        args.extend([s("--journal"), journal.display().to_string()]);
    }
    let coordinator = Server::start("coordinator", &args, dir.join("coordinator.log")).await?;
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
