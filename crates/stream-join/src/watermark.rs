//! How watermarks advance after a batch: a pure decision, tested on its own.

use pipeline_config::WatermarkPolicy;

/// Watermarks after a batch (microseconds; `None` until an input has reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    /// The left input's.
    pub left: Option<i64>,
    /// The right input's.
    pub right: Option<i64>,
    /// The job's, which decides lateness and eviction.
    pub job: Option<i64>,
}

/// Each input's watermark (its latest event time less its delay, never going back) and the
/// job's (per the policy; under `min` it waits until both inputs have reported, and it never
/// goes back either), after a batch whose inputs reached `max` (left, right) with `delay`
/// (left, right).
pub fn advance(previous: Watermarks, policy: WatermarkPolicy, max: [Option<i64>; 2], delay: [i64; 2]) -> Watermarks {
    let input = |before: Option<i64>, max: Option<i64>, delay: i64| later(before, max.map(|m| m.saturating_sub(delay)));
    let left = input(previous.left, max[0], delay[0]);
    let right = input(previous.right, max[1], delay[1]);
    let candidate = match (policy, left, right) {
        (WatermarkPolicy::Min, Some(l), Some(r)) => Some(l.min(r)),
        (WatermarkPolicy::Max, l, r) => l.max(r),
        (WatermarkPolicy::Min, _, _) => None,
    };
    Watermarks { left, right, job: later(previous.job, candidate) }
}

/// The later of two optional times (a watermark never goes back).
fn later(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Watermarks = Watermarks { left: None, right: None, job: None };

    #[test]
    fn min_waits_for_both_inputs() {
        let w = advance(NONE, WatermarkPolicy::Min, [Some(100), None], [10, 10]);
        assert_eq!(w, Watermarks { left: Some(90), right: None, job: None });
        let w = advance(w, WatermarkPolicy::Min, [None, Some(50)], [10, 10]);
        assert_eq!(w, Watermarks { left: Some(90), right: Some(40), job: Some(40) });
    }

    #[test]
    fn max_follows_the_faster_input() {
        let w = advance(NONE, WatermarkPolicy::Max, [Some(100), Some(300)], [10, 50]);
        assert_eq!(w.job, Some(250));
    }

    #[test]
    fn watermarks_never_go_back() {
        let before = Watermarks { left: Some(90), right: Some(80), job: Some(80) };
        let w = advance(before, WatermarkPolicy::Min, [Some(20), Some(30)], [10, 10]);
        assert_eq!(w, before);
    }

    #[test]
    fn delays_saturate_instead_of_overflowing() {
        let w = advance(NONE, WatermarkPolicy::Max, [Some(i64::MIN + 1), None], [10, 10]);
        assert_eq!(w.left, Some(i64::MIN));
    }
}
