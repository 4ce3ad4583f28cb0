//! `oxrl bench journal`: a restart's replay of the coordinator's journal after a long run on an
//! endless task, the whole journal against the compacted one (snapshot + tail). The drive and
//! the timing live in `coordinator::bench`; this prints the figures and one JSON line.

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Records to write before the restart.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// The compacted journal's threshold (--journal-compact-records).
    #[arg(long, default_value_t = coordinator::DEFAULT_COMPACT_EVERY)]
    compact_every: u64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.records > 0, "--records must be at least 1");
    anyhow::ensure!(
        a.compact_every > 0,
        "--compact-every must be at least 1 (0 never compacts: nothing to compare)"
    );
    // The journals (hundreds of MB for a million records) go to a fresh directory, removed
    // afterwards.
    let dir = std::env::temp_dir().join(format!("oxrl-bench-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("making {}", dir.display()))?;
    let report = coordinator::bench::journal_replay(a.records, a.compact_every, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let r = report.context("driving the coordinators")?;
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let ratio = r.full_open_s / r.compacted_open_s.max(1e-9);
    println!(
        "journal: restart replay after {} records on an endless task (written in {:.1} s, two coordinators in lockstep)",
        r.records, r.write_s
    );
    println!("{:<28} {:>10} {:>10}", "", "MB", "open s");
    println!(
        "{:<28} {:>10.1} {:>10.3}",
        "full journal",
        mb(r.full_bytes),
        r.full_open_s
    );
    println!(
        "{:<28} {:>10.1} {:>10.3}",
        format!("snapshot + tail ({} rec)", r.tail_records),
        mb(r.snapshot_bytes + r.tail_bytes),
        r.compacted_open_s
    );
    println!("full / compacted: {ratio:.1}x");
    let json = serde_json::json!({
        "suite": "journal",
        "records": r.records,
        "compact_every": a.compact_every,
        "write_s": r.write_s,
        "full_bytes": r.full_bytes,
        "full_open_s": r.full_open_s,
        "snapshot_bytes": r.snapshot_bytes,
        "tail_bytes": r.tail_bytes,
        "tail_records": r.tail_records,
        "compacted_open_s": r.compacted_open_s,
        "full_over_compacted": ratio,
    });
    println!("{json}");
    Ok(())
}
