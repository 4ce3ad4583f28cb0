//! Pipeline suite: the same number of samples through `oxrl run` with lag bound k against
//! k = 0 (on-policy, the baseline), measured in the same invocation: wall time and the
//! actors' idle fraction. Then the overlap bound: the same steps' generation alone and
//! training alone, timed in this process, against which the pipelined run's wall time is a
//! ratio (1.0 would be perfect overlap of the two).

use anyhow::Context;
use std::path::Path;

#[derive(clap::Args)]
pub struct Args {
    /// Optimizer steps per run.
    #[arg(long, default_value_t = 20)]
    steps: u64,
    #[arg(long, default_value_t = 32)]
    prompts_per_step: usize,
    #[arg(long, default_value_t = 8)]
    group_size: usize,
    /// The lag bound compared with k = 0.
    #[arg(long, default_value_t = 8)]
    k: u64,
    #[arg(long, default_value_t = 2)]
    actors: usize,
}

struct Outcome {
    wall_s: f64,
    idle_frac: f64,
    dropped: u64,
    samples: u64,
    /// Groups the actors delivered (accepted by the learner).
    delivered: u64,
    /// The learner's own wall time at its last step (`wall_s` of metrics.jsonl's last line:
    /// from its start, process start-up and model loading aside).
    learner_wall_s: f64,
    /// Where the learner's wall went (metrics.jsonl's `update_s` and `wait_s` summed).
    learner: LearnerTime,
}

/// The pipelined learner's wall time, taken apart.
#[derive(Default)]
struct LearnerTime {
    /// Its updates (forward, backward, optimizer).
    update_s: f64,
    /// Waiting for the first batch (actors starting, first samples).
    first_wait_s: f64,
    /// Waiting for every later batch.
    wait_s: f64,
}

impl Outcome {
    /// Fraction of delivered groups that were trained on (the rest went stale or unused).
    fn used_frac(&self, prompts: u64) -> f64 {
        prompts as f64 / self.delivered.max(1) as f64
    }
}

fn one_run(a: &Args, k: u64, dir: &Path) -> anyhow::Result<Outcome> {
    let exe = std::env::current_exe()?;
    let started = std::time::Instant::now();
    let out = std::process::Command::new(exe)
        .args([
            "run",
            "--out",
            &dir.display().to_string(),
            "--eval-every",
            "0",
        ])
        .args([
            "--steps",
            &a.steps.to_string(),
            "--prompts-per-step",
            &a.prompts_per_step.to_string(),
        ])
        .args([
            "--group-size",
            &a.group_size.to_string(),
            "--max-lag",
            &k.to_string(),
            "--actors",
            &a.actors.to_string(),
        ])
        .env("RUST_LOG", "warn")
        .output()
        .context("running oxrl run")?;
    anyhow::ensure!(
        out.status.success(),
        "oxrl run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wall_s = started.elapsed().as_secs_f64();
    let (mut idle, mut busy, mut delivered) = (0.0, 0.0, 0);
    for i in 0..a.actors {
        let text = std::fs::read_to_string(dir.join(format!("logs/actor-{i}.json")))?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        idle += v["idle_s"].as_f64().unwrap_or(0.0);
        busy += v["busy_s"].as_f64().unwrap_or(0.0);
        delivered += v["groups_accepted"].as_u64().unwrap_or(0);
    }
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl"))?;
    let (mut dropped, mut samples, mut learner_wall_s) = (0, 0, 0.0);
    let mut learner = LearnerTime::default();
    for (i, line) in metrics.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        dropped += v["dropped_stale"].as_u64().unwrap_or(0);
        samples += v["samples"].as_u64().unwrap_or(0);
        learner_wall_s = v["wall_s"].as_f64().unwrap_or(learner_wall_s);
        learner.update_s += v["update_s"].as_f64().unwrap_or(0.0);
        let wait = v["wait_s"].as_f64().unwrap_or(0.0);
        if i == 0 {
            learner.first_wait_s = wait;
        } else {
            learner.wait_s += wait;
        }
    }
    Ok(Outcome {
        wall_s,
        idle_frac: idle / (idle + busy).max(1e-9),
        dropped,
        samples,
        delivered,
        learner_wall_s,
        learner,
    })
}

/// The run's work done without overlap, in this process on the same model and shapes.
struct Alone {
    /// Generation of every step's groups, shared among the actors (each samples on its own
    /// thread, in parallel): the summed sampling seconds over the actors.
    gen_s: f64,
    /// Training on them: the summed update seconds (one learner thread).
    train_s: f64,
    /// Both, spread over the machine's cores: no schedule on these cores can beat it.
    cpu_bound_s: f64,
}

fn alone(a: &Args, pb: &indicatif::ProgressBar) -> anyhow::Result<Alone> {
    let mut cfg = learner::RunConfig {
        steps: a.steps,
        prompts_per_step: a.prompts_per_step,
        group_size: a.group_size,
        ..Default::default()
    };
    cfg.update.max_lag = 0;
    cfg.validate()?;
    let m = crate::model_arg::load(crate::model_arg::DEFAULT_MODEL)?;
    let steps = super::step::timed_steps(&cfg, &m, a.steps as usize, pb, |_, _| {})?;
    let sample: f64 = steps.iter().map(|t| t.sample_s).sum();
    let train: f64 = steps.iter().map(|t| t.update_s).sum();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    Ok(Alone {
        gen_s: sample / a.actors.max(1) as f64,
        train_s: train,
        cpu_bound_s: (sample + train) / cores,
    })
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let tmp = std::env::temp_dir().join(format!("oxrl-bench-pipeline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let pb = crate::progress::bar(3, "bench pipeline");
    pb.set_message(format!("oxrl run, k = 0, {} steps", a.steps));
    let base = one_run(&a, 0, &tmp.join("k0"))?;
    pb.inc(1);
    pb.set_message(format!("oxrl run, k = {}, {} steps", a.k, a.steps));
    let piped = one_run(&a, a.k, &tmp.join(format!("k{}", a.k)))?;
    pb.inc(1);
    let work = alone(&a, &pb)?;
    pb.finish_and_clear();
    let _ = std::fs::remove_dir_all(&tmp);
    let prompts = a.steps * a.prompts_per_step as u64;
    println!(
        "{:<8} {:>10} {:>12} {:>14} {:>10} {:>16}",
        "k", "wall s", "actor idle", "dropped stale", "samples", "groups used"
    );
    for (k, o) in [(0, &base), (a.k, &piped)] {
        println!(
            "{k:<8} {:>10.1} {:>11.0}% {:>14} {:>10} {:>15.0}%",
            o.wall_s,
            100.0 * o.idle_frac,
            o.dropped,
            o.samples,
            100.0 * o.used_frac(prompts)
        );
    }
    println!(
        "speed-up k={} over k=0: {:.2}x",
        a.k,
        base.wall_s / piped.wall_s
    );
    let bound = work.gen_s.max(work.train_s);
    println!(
        "overlap: generation alone {:.1} s, training alone {:.1} s; k={} learner wall {:.1} s = {:.2}x max(generation, training) ({:.2}x the {:.1} s both take spread over the cores)",
        work.gen_s,
        work.train_s,
        a.k,
        piped.learner_wall_s,
        piped.learner_wall_s / bound,
        piped.learner_wall_s / work.cpu_bound_s,
        work.cpu_bound_s
    );
    let l = &piped.learner;
    let rest = piped.learner_wall_s - l.update_s - l.first_wait_s - l.wait_s;
    println!(
        "k={} learner wall {:.1} s = updates {:.1} s ({:.2}x training alone) + first batch {:.1} s + later waits {:.1} s + the rest {:.1} s (weights out, metrics)",
        a.k,
        piped.learner_wall_s,
        l.update_s,
        l.update_s / work.train_s,
        l.first_wait_s,
        l.wait_s,
        rest
    );
    println!(
        "{}",
        serde_json::json!({
            "suite": "pipeline", "steps": a.steps, "prompts_per_step": a.prompts_per_step, "group_size": a.group_size,
            "actors": a.actors, "k": a.k, "wall_s_k0": base.wall_s, "wall_s_k": piped.wall_s,
            "speedup": base.wall_s / piped.wall_s, "actor_idle_frac_k0": base.idle_frac, "actor_idle_frac_k": piped.idle_frac,
            "dropped_stale_k0": base.dropped, "dropped_stale_k": piped.dropped,
            "groups_used_frac_k0": base.used_frac(prompts), "groups_used_frac_k": piped.used_frac(prompts),
            "generation_alone_s": work.gen_s, "training_alone_s": work.train_s, "cpu_bound_s": work.cpu_bound_s,
            "learner_wall_s_k": piped.learner_wall_s, "overlap_ratio": piped.learner_wall_s / bound,
            "cpu_bound_ratio": piped.learner_wall_s / work.cpu_bound_s,
            "learner_update_s_k": l.update_s, "learner_first_wait_s_k": l.first_wait_s,
            "learner_wait_s_k": l.wait_s, "learner_rest_s_k": rest,
            "update_slowdown_k": l.update_s / work.train_s,
        })
    );
    Ok(())
}
