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

/// How much lower than the process's other threads the threads doing a job's own CPU work
/// (decoding, Parquet encoding) run: Linux `nice` +10, a tenth of the CPU share when both
/// want it.
const CPU_WORK_NICE: i32 = 10;

thread_local! {
    static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Lowers the calling thread's scheduling priority, once per thread, below the source
/// client's network threads (librdkafka's broker threads are created at normal priority
/// before any of this work starts).
///
/// Fetching is a chain of waits: a request goes out only after the previous response was
/// parsed. When decoding and encoding take the CPU from the thread parsing responses, every
/// fetch waits longer and the whole run follows; at a lower priority they take what the
/// chain leaves. Threads this one creates later inherit the lower priority. Failing to lower
/// it (a sandbox forbidding `setpriority`) changes nothing but speed, so it is only logged.
/// Do not combine it with [`limit_malloc_arenas`]: a lowered thread preempted while holding a
/// shared arena's lock stalls the threads it was lowered for.
pub fn lower_cpu_work_priority() {
    if LOWERED.with(|l| l.replace(true)) {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority read and change only this thread's scheduling state.
        let failed = unsafe {
            let thread = libc::gettid() as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, thread, CPU_WORK_NICE) != 0
        };
        if failed {
            tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower a worker thread's priority");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The calling thread's nice value.
    fn nice() -> i32 {
        // SAFETY: reads this thread's scheduling state only.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn cpu_work_runs_lower_than_the_thread_that_started_it_once_per_thread() {
        let before = nice();
        let (lowered, again, child) = std::thread::spawn(|| {
            lower_cpu_work_priority();
            let lowered = nice();
            lower_cpu_work_priority();
            let child = std::thread::spawn(nice).join().expect("child thread");
            (lowered, nice(), child)
        })
        .join()
        .expect("worker thread");
        assert_eq!(lowered, (before + CPU_WORK_NICE).min(19));
        assert_eq!(again, lowered, "a second call changes nothing");
        assert_eq!(child, lowered, "threads it starts inherit the lower priority");
        assert_eq!(nice(), before, "other threads keep theirs");
    }
}
