//! Resource figures for summaries and benchmarks.

/// Peak resident set size of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Caps glibc's malloc arenas. By default glibc gives every thread that allocates its own arena
/// (up to 8 per core); with tokio workers, the blocking pool and librdkafka's threads all
/// churning Arrow buffers, freed memory stays spread over many arenas and RSS wanders far above
/// what is live. Call first thing in `main`, before threads start.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
