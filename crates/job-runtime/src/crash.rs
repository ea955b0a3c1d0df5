//! Crash points are compiled in always (a disabled point is one atomic load) and armed only
//! through the `FAILPOINTS` environment variable, so the binaries tests kill are the ones users run.

/// Arms the crash points named in `FAILPOINTS`; call once at start. The returned scenario
/// must live as long as the process.
pub fn crash_points_from_env() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}
