//! Hand-drawn SVG charts (no script, no network): a line over time and labelled bars. Every
//! drawn datum is an element of class `mark`, so a test can tell a chart that drew from one
//! that did not.

use std::fmt::Write as _;

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 48.0;

/// Text made safe inside SVG/HTML.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn open(title: &str) -> String {
    format!(
        r#"<figure><figcaption>{}</figcaption><svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}"><line class="axis" x1="{LEFT}" y1="{y}" x2="{x}" y2="{y}"/><line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{y}"/>"#,
        escape(title),
        y = HEIGHT - BOTTOM,
        x = WIDTH - RIGHT
    )
}

fn close(svg: &mut String) {
    svg.push_str("</svg></figure>");
}

/// The y axis' top label and its scale.
fn y_scale(svg: &mut String, max: f64) -> impl Fn(f64) -> f64 {
    let max = if max > 0.0 { max } else { 1.0 };
    let _ = write!(svg, r#"<text class="tick" x="{}" y="{}" text-anchor="end">{}</text>"#, LEFT - 6.0, TOP + 4.0, short(max));
    let _ = write!(svg, r#"<text class="tick" x="{}" y="{}" text-anchor="end">0</text>"#, LEFT - 6.0, HEIGHT - BOTTOM);
    move |v: f64| HEIGHT - BOTTOM - (v / max) * (HEIGHT - BOTTOM - TOP)
}

/// A line through `points` (x: any increasing measure, e.g. Unix ms), with the first and last x
/// labelled by `x_label`. None without points.
pub(crate) fn line(title: &str, points: &[(f64, f64)], x_label: impl Fn(f64) -> String) -> Option<String> {
    let (first, last) = (points.first()?, points.last()?);
    let mut svg = open(title);
    let max_y = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let y = y_scale(&mut svg, max_y);
    let span = (last.0 - first.0).max(1.0);
    let x = |v: f64| LEFT + (v - first.0) / span * (WIDTH - LEFT - RIGHT);
    let path: Vec<String> = points.iter().map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1))).collect();
    let _ = write!(svg, r#"<polyline class="mark" fill="none" points="{}"/>"#, path.join(" "));
    for p in points.iter().step_by((points.len() / 60).max(1)) {
        let _ = write!(svg, r#"<circle class="mark" r="2" cx="{:.1}" cy="{:.1}"/>"#, x(p.0), y(p.1));
    }
    let base = HEIGHT - BOTTOM + 16.0;
    let _ = write!(svg, r#"<text class="tick" x="{LEFT}" y="{base}">{}</text>"#, escape(&x_label(first.0)));
    let _ = write!(svg, r#"<text class="tick" x="{}" y="{base}" text-anchor="end">{}</text>"#, WIDTH - RIGHT, escape(&x_label(last.0)));
    close(&mut svg);
    Some(svg)
}

/// One bar per `(label, value)`. None without bars.
pub(crate) fn bars(title: &str, bars: &[(String, f64)]) -> Option<String> {
    if bars.is_empty() {
        return None;
    }
    let mut svg = open(title);
    let y = y_scale(&mut svg, bars.iter().map(|b| b.1).fold(0.0, f64::max));
    let slot = (WIDTH - LEFT - RIGHT) / bars.len() as f64;
    for (i, (label, value)) in bars.iter().enumerate() {
        let x = LEFT + i as f64 * slot + slot * 0.1;
        let top = y(*value);
        let _ = write!(
            svg,
            r#"<rect class="mark" x="{x:.1}" y="{top:.1}" width="{:.1}" height="{:.1}"><title>{}: {}</title></rect>"#,
            slot * 0.8,
            (HEIGHT - BOTTOM - top).max(0.5),
            escape(label),
            short(*value)
        );
        if bars.len() <= 16 {
            let _ = write!(
                svg,
                r#"<text class="tick" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                x + slot * 0.4,
                HEIGHT - BOTTOM + 14.0,
                escape(label)
            );
        }
    }
    close(&mut svg);
    Some(svg)
}

/// File sizes in power-of-two buckets, as bars. None without sizes.
pub(crate) fn size_histogram(title: &str, sizes: &[i64]) -> Option<String> {
    let buckets = size_buckets(sizes);
    bars(title, &buckets.into_iter().map(|(bytes, n)| (short_bytes(bytes), n as f64)).collect::<Vec<_>>())
}

/// `(upper bound in bytes, files)` per power-of-two bucket from the smallest to the largest size.
fn size_buckets(sizes: &[i64]) -> Vec<(u64, u64)> {
    let bucket = |s: i64| 64 - (s.max(1) as u64 - 1).leading_zeros();
    let (Some(lo), Some(hi)) = (sizes.iter().map(|s| bucket(*s)).min(), sizes.iter().map(|s| bucket(*s)).max()) else { return Vec::new() };
    (lo..=hi).map(|b| (1u64 << b, sizes.iter().filter(|s| bucket(**s) == b).count() as u64)).collect()
}

fn short(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.1}G", v / 1e9),
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e4 => format!("{:.0}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

fn short_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{}G", b >> 30),
        b if b >= 1 << 20 => format!("{}M", b >> 20),
        b if b >= 1 << 10 => format!("{}K", b >> 10),
        b => format!("{b}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fall_into_power_of_two_buckets_without_gaps() {
        assert_eq!(size_buckets(&[1000, 1024, 1025, 5000]), vec![(1024, 2), (2048, 1), (4096, 0), (8192, 1)]);
        assert!(size_buckets(&[]).is_empty());
    }

    #[test]
    fn every_datum_is_a_mark_and_no_data_draws_no_chart() {
        let chart = bars("t", &[("a".into(), 1.0), ("b<".into(), 3.0)]).unwrap();
        assert_eq!(chart.matches(r#"class="mark""#).count(), 2);
        assert!(chart.contains("b&lt;"));
        assert!(bars("t", &[]).is_none() && line("t", &[], |x| x.to_string()).is_none());
        let drawn = line("t", &[(0.0, 1.0), (10.0, 5.0)], |x| x.to_string()).unwrap();
        assert!(drawn.contains("<polyline class=\"mark\""));
    }
}
