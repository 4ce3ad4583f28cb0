//! CPU time as Linux accounts it, for `oxrl bench load`: a process's user + system seconds
//! (`/proc/<pid>/stat`), those of its threads with a given name (the learner's trainer), the
//! whole machine's busy and total core-seconds (`/proc/stat`), and the open-files limit that
//! a thousand simulated actors' connections need.

use anyhow::Context;

/// Core-seconds of the whole machine since boot: busy (user, nice, system, irq, softirq,
/// steal) and in all (busy plus idle and I/O wait).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct MachineCpu {
    pub busy_s: f64,
    pub total_s: f64,
}

/// Seconds per clock tick of the `/proc` CPU counters.
fn tick_s() -> f64 {
    // SAFETY: sysconf reads a constant of the running system and touches no memory of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1.0 / if hz > 0 { hz as f64 } else { 100.0 }
}

/// User + system seconds in the text of a `/proc/.../stat` file (fields 14 and 15; the
/// command name before them may hold spaces and parentheses, so fields count from its end).
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds process `pid` has used, all its threads together (None once it is gone).
pub(super) fn process_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat_cpu_ticks(&stat)? as f64 * tick_s())
}

/// CPU seconds of the threads of process `pid` named `name` (0 when it has none).
pub(super) fn threads_named_s(pid: u32, name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let ticks: u64 = tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .filter_map(|t| stat_cpu_ticks(&std::fs::read_to_string(t.path().join("stat")).ok()?))
        .sum();
    ticks as f64 * tick_s()
}

/// The aggregate `cpu` line of `/proc/stat`.
fn machine_from(text: &str) -> Option<MachineCpu> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    let idle = at(3) + at(4);
    Some(MachineCpu {
        busy_s: busy as f64 * tick_s(),
        total_s: (busy + idle) as f64 * tick_s(),
    })
}

/// The whole machine's CPU counters (zero where `/proc/stat` cannot be read).
pub(super) fn machine() -> MachineCpu {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| machine_from(&t))
        .unwrap_or_default()
}

/// Raises the soft open-files limit towards the hard one so that `needed` descriptors fit
/// (the child servers inherit it); an error saying what to do when the hard limit is lower.
pub(super) fn ensure_open_files(needed: u64) -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the one struct we pass.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    anyhow::ensure!(got == 0, "reading the open-files limit failed");
    if lim.rlim_cur >= needed {
        return Ok(());
    }
    anyhow::ensure!(
        lim.rlim_max >= needed,
        "this many simulated actors need about {needed} open files, but the hard limit is {}: \
         raise it (`ulimit -Hn`, or the container's nofile limit) or sweep fewer actors",
        lim.rlim_max
    );
    lim.rlim_cur = needed.max(lim.rlim_cur);
    // SAFETY: as above.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    anyhow::ensure!(set == 0, "raising the open-files limit to {needed} failed");
    Ok(())
}

/// Open files `actors` simulated actors need in this process: a coordinator and a learner
/// connection each, plus headroom for the runtime, logs and the drain's filler actor.
pub(super) fn open_files_for(actors: usize) -> u64 {
    2 * actors as u64 + 256
}

/// The machine's cores, as the report divides busy time by them.
pub(super) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// CPU seconds of this process (the simulated actors), for the report.
pub(super) fn this_process_s() -> anyhow::Result<f64> {
    process_s(std::process::id()).context("reading /proc/self/stat")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_end_of_the_name() {
        // pid (comm with ") " inside) state ppid ... utime=7 stime=5 ...
        let stat = "42 (a) b) (c) S 1 1 1 0 -1 4194304 98 0 0 0 7 5 0 0 20 0 1 0";
        assert_eq!(stat_cpu_ticks(stat), Some(12));
        assert_eq!(stat_cpu_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn machine_busy_and_total() {
        let text = "cpu  10 20 30 400 50 6 7 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let m = machine_from(text).unwrap();
        let t = tick_s();
        assert!((m.busy_s - 81.0 * t).abs() < 1e-9, "{m:?}");
        assert!((m.total_s - 531.0 * t).abs() < 1e-9, "{m:?}");
    }

    #[test]
    fn this_process_uses_cpu_and_has_threads() {
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(this_process_s().unwrap() > 0.0);
        assert!(machine().total_s > 0.0);
        assert_eq!(threads_named_s(std::process::id(), "no-such-thread"), 0.0);
    }

    #[test]
    fn the_open_files_limit_already_met_is_left_alone() {
        ensure_open_files(16).unwrap();
    }
}
