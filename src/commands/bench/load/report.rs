//! What `oxrl bench load` prints: for each size a block of figures and one JSON line, as it
//! finishes; after the last size, one Markdown table row per size (the sweep), with the
//! resources that saturated in each run.

use super::window::Costs;
use super::{Args, Report};

/// The figures of one size, then its JSON line.
pub(super) fn print(a: &Args, r: &Report) {
    let t = &r.tally;
    let c = Costs::of(&r.load, &r.idle, super::cpu::cores());
    println!(
        "load: {} simulated actors x {:.0} s against a coordinator (journal {}) and a learner (child processes, loopback){}",
        r.actors,
        a.seconds,
        if a.no_journal { "off" } else { "on" },
        if r.pushed { "" } else { "; --no-push: no groups reach the learner" }
    );
    println!(
        "{:<22} {} (leases completed for {} groups)",
        "groups accepted", t.accepted, t.completed
    );
    println!(
        "{:<22} {:.1} leases/s, {:.1} groups/s accepted, {:.0} heartbeats/s (measured {:.1} s after warm-up)",
        "throughput", c.leases_per_s, c.groups_per_s, c.heartbeats_per_s, r.load.seconds
    );
    println!(
        "{:<22} {} in {} steps ({} dropped stale, {} zero-variance, {} filler groups to finish the last batch)",
        "groups trained", r.trained.groups, r.trained.steps, r.trained.dropped_stale, r.trained.zero_variance, r.fillers
    );
    println!(
        "{:<22} p50 {:.2} ms, p99 {:.2} ms ({} granted, {} refused in all)",
        "lease latency", r.latency.p50_ms, r.latency.p99_ms, t.leases, t.refusals
    );
    print_cpu(r, &c);
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
            "{name:<22} {:.1} MiB -> {:.1} MiB ({:.3}x); anonymous {:.1} -> {:.1} MiB ({:.3}x)",
            m.start,
            m.end,
            m.ratio(),
            m.anon_start,
            m.anon_end,
            m.anon_ratio()
        );
    }
    println!("{}", json(a, r, &c));
}

fn print_cpu(r: &Report, c: &Costs) {
    println!(
        "{:<22} {:.3} cores: {:.0} us a lease all in ({:.0} us net of heartbeats), {:.0} us a group, {:.1} us a heartbeat (idle window)",
        "coordinator CPU",
        c.coordinator_cores,
        c.coordinator_us_per_lease,
        c.coordinator_us_per_lease_net,
        c.coordinator_us_per_group,
        c.coordinator_us_per_heartbeat
    );
    println!(
        "{:<22} {:.0} RPCs/s (heartbeats, leases granted and refused, completions, lease checks) at {:.0} us each",
        "coordinator RPCs", c.coordinator_rpcs_per_s, c.coordinator_us_per_rpc
    );
    println!(
        "{:<22} {:.0} leases/s on one core at this cost per lease",
        "coordinator capacity", c.coordinator_leases_per_core_s
    );
    println!(
        "{:<22} {:.3} cores: intake {:.3} ({:.0} us a group), training {:.3}",
        "learner CPU",
        c.learner_cores,
        c.learner_intake_cores,
        c.learner_intake_us_per_group,
        c.trainer_cores
    );
    println!(
        "{:<22} {:.2} of {} cores busy ({:.0} %; the simulated actors {:.2})",
        "machine CPU",
        c.machine_busy_cores,
        super::cpu::cores(),
        100.0 * c.machine_busy_fraction,
        c.actors_cores
    );
    println!("{:<22} {}", "saturated (>= 90 %)", c.saturated.join(", "));
    println!(
        "{:<22} {} bytes ({:.0} B a lease)",
        "coordinator journal",
        r.journal_bytes,
        r.journal_bytes as f64 / r.tally.leases.max(1) as f64
    );
}

fn json(a: &Args, r: &Report, c: &Costs) -> serde_json::Value {
    let t = &r.tally;
    let mut out = serde_json::json!({
        "suite": "load", "actors": r.actors, "seconds": a.seconds,
        "prompts_per_step": a.prompts_per_step, "prompts_per_lease": a.prompts_per_lease,
        "group_size": a.group_size, "heartbeat_ms": a.heartbeat_ms, "pushed": r.pushed,
        "groups_accepted": t.accepted, "groups_completed": t.completed, "groups_per_s": c.groups_per_s,
        "groups_trained": r.trained.groups, "steps": r.trained.steps,
        "dropped_stale": r.trained.dropped_stale, "filler_groups": r.fillers,
        "leases_per_s": c.leases_per_s, "heartbeats_per_s": c.heartbeats_per_s,
        "lease_refusals_per_s": c.refusals_per_s,
        "window_s": r.load.seconds, "idle_window_s": r.idle.seconds,
        "lease_latency_ms_p50": r.latency.p50_ms, "lease_latency_ms_p99": r.latency.p99_ms,
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
    });
    let anon = serde_json::json!({
        "coordinator_anon_mib_start": r.coordinator_rss.anon_start,
        "coordinator_anon_mib_end": r.coordinator_rss.anon_end,
        "coordinator_anon_ratio": r.coordinator_rss.anon_ratio(),
        "learner_anon_mib_start": r.learner_rss.anon_start,
        "learner_anon_mib_end": r.learner_rss.anon_end,
        "learner_anon_ratio": r.learner_rss.anon_ratio(),
    });
    // A second object: one json! of all the fields passes the macro's recursion limit.
    let costs = serde_json::json!({
        "coordinator_cpu_s": r.load.coordinator_s, "coordinator_cores": c.coordinator_cores,
        "coordinator_rpcs_per_s": c.coordinator_rpcs_per_s, "coordinator_us_per_rpc": c.coordinator_us_per_rpc,
        "coordinator_us_per_lease": c.coordinator_us_per_lease,
        "coordinator_us_per_lease_net": c.coordinator_us_per_lease_net,
        "coordinator_us_per_group": c.coordinator_us_per_group,
        "coordinator_us_per_heartbeat": c.coordinator_us_per_heartbeat,
        "coordinator_leases_per_core_s": c.coordinator_leases_per_core_s,
        "learner_cpu_s": r.load.learner_s, "learner_cores": c.learner_cores,
        "learner_intake_cores": c.learner_intake_cores,
        "learner_intake_us_per_group": c.learner_intake_us_per_group,
        "learner_training_cores": c.trainer_cores,
        "actors_cores": c.actors_cores,
        "machine_cores": super::cpu::cores(), "machine_busy_cores": c.machine_busy_cores,
        "saturated": c.saturated,
        "journal": !a.no_journal, "journal_bytes": r.journal_bytes,
    });
    for part in [costs, anon] {
        if let (Some(all), serde_json::Value::Object(more)) = (out.as_object_mut(), part) {
            all.extend(more);
        }
    }
    out
}

/// One Markdown row per size.
pub(super) fn table(reports: &[Report]) {
    println!();
    println!("| actors | leases/s | groups/s | heartbeats/s | lease p50 / p99 ms | coordinator RPCs/s | coordinator cores | us / RPC | us / lease (net of heartbeats) | us / heartbeat (idle) | leases/s per coordinator core | learner intake cores (us / group) | learner training cores | machine busy | RSS coordinator / learner MiB | errors | saturated |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        let c = Costs::of(&r.load, &r.idle, super::cpu::cores());
        println!(
            "| {} | {:.1} | {:.1} | {:.0} | {:.2} / {:.2} | {:.0} | {:.3} | {:.0} | {:.0} ({:.0}) | {:.1} | {:.0} | {:.3} ({:.0}) | {:.2} | {:.0} % | {:.1} / {:.1} | {} | {} |",
            r.actors,
            c.leases_per_s,
            c.groups_per_s,
            c.heartbeats_per_s,
            r.latency.p50_ms,
            r.latency.p99_ms,
            c.coordinator_rpcs_per_s,
            c.coordinator_cores,
            c.coordinator_us_per_rpc,
            c.coordinator_us_per_lease,
            c.coordinator_us_per_lease_net,
            c.coordinator_us_per_heartbeat,
            c.coordinator_leases_per_core_s,
            c.learner_intake_cores,
            c.learner_intake_us_per_group,
            c.trainer_cores,
            100.0 * c.machine_busy_fraction,
            r.coordinator_rss.end,
            r.learner_rss.end,
            r.errors(),
            c.saturated.join(", ")
        );
    }
}
