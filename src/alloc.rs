//! How the process's memory allocator treats freed tensors.
//!
//! Every candle op allocates its output, and a step frees them all again. glibc's malloc
//! hands each large freed buffer back to the kernel (`munmap`, or trimming the heap), so the
//! next op's buffer arrives as fresh pages that the kernel must fault in and zero: perf put
//! 40 % of a learner step on the default model in the kernel (`exc_page_fault`,
//! `clear_page_erms`). Raising malloc's mmap and trim thresholds keeps freed memory in the
//! process for reuse (what PyTorch's caching allocator does for its tensors): the learner
//! step and teacher-forced scoring get 1.4x and 1.5x faster (BENCHMARKS.md, "Where the time
//! goes"). The cost is that a process keeps its peak heap instead of returning it.
//!
//! A `GLIBC_TUNABLES` that sets any malloc tunable wins: the thresholds are left as it says.
//! `oxrl coordinator` does not set them (`main.rs`): it holds no tensors, and with them each
//! of its allocator arenas would keep the high-water mark of its transients, which a 30-minute
//! soak saw as steady growth (BENCHMARKS.md, "Soak").

/// Allocations of up to this many bytes come from the heap (not a mapping of their own).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 256 << 20;
/// Free memory at the top of the heap is returned to the kernel beyond this many bytes.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 1 << 30;

/// Sets the thresholds (before anything large is allocated); a no-op off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let user_set = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."));
        if !user_set {
            // SAFETY: mallopt only changes allocator parameters; it is called once, at the
            // start of main, before any other thread exists.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
            }
        }
    }
}
