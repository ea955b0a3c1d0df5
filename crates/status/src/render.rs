//! The status as text for a terminal.

use std::fmt::Write as _;

use crate::PipelineStatus;

/// The status as aligned text: tables, then jobs, then breaches.
pub fn render(status: &PipelineStatus) -> String {
    let mut rows =
        vec![["TABLE", "VERSION", "FILES", "ROWS", "SIZE", "PARTITIONS", "SMALL FILES", "LAST COMMIT"].map(String::from).to_vec()];
    for t in &status.tables {
        if !t.exists {
            rows.push(vec![t.name.clone(), "-".into(), "not created yet".into()]);
            continue;
        }
        let last = t.last_commit.as_ref().map(|(time, op)| format!("{time} {op}")).unwrap_or_default();
        rows.push(vec![
            t.name.clone(),
            t.version.map(|v| v.to_string()).unwrap_or_default(),
            t.files.to_string(),
            t.rows.map_or_else(|| "?".into(), |r| r.to_string()),
            human_bytes(t.bytes),
            t.partitions.to_string(),
            format!("{} ({:.0}%)", t.small_files, t.small_file_share * 100.0),
            last,
        ]);
    }
    let mut out = aligned(&rows);
    if let Some(raw) = &status.raw_append {
        match &raw.error {
            Some(e) => _ = writeln!(out, "\n{}: lag unknown: {e}", raw.job_id),
            None => _ = writeln!(out, "\n{}: {} messages behind", raw.job_id, raw.lag),
        }
        for p in &raw.partitions {
            let committed = p.committed.map_or_else(|| "nothing".into(), |c| c.to_string());
            let _ =
                writeln!(out, "  {}[{}] committed {committed}, high watermark {}, lag {}", p.topic, p.partition, p.high_watermark, p.lag);
        }
    }
    for job in &status.incremental {
        let state = if job.done || job.batch == 0 { "" } else { " (pending: the next run re-runs it)" };
        let _ = write!(out, "\n{}: batch {}{state}", job.job, job.batch);
        if let Some(w) = &job.watermark {
            let _ = write!(out, ", watermark {w}");
        }
        if let Some(n) = job.tombstones {
            let _ = write!(out, ", {n} tombstones");
        }
        out.push('\n');
        for s in &job.sources {
            let read = s.read_to.map_or_else(|| "nothing".into(), |v| format!("to version {v}"));
            let now = s.version.map_or_else(|| "none".into(), |v| v.to_string());
            let _ = writeln!(out, "  {} read {read}, now at {now}: {} versions behind", s.table, s.behind);
        }
    }
    render_processes(&mut out, status);
    for b in &status.breaches {
        let _ = writeln!(out, "\nOVER LIMIT: {} is {} (limit {})", b.what, b.value, b.limit);
    }
    out
}

/// The processes seen through their heartbeat files, with their last run.
fn render_processes(out: &mut String, status: &PipelineStatus) {
    for p in &status.processes {
        match &p.error {
            Some(e) => _ = writeln!(out, "\n{}: {e}", p.path.display()),
            None => {
                let progress = p.last_progress_age_secs.map_or_else(|| "no commit yet".into(), |a| format!("last commit {a}s ago"));
                _ = writeln!(out, "\n{} (pid {}): heartbeat {}s ago, {progress}", p.job, p.pid, p.heartbeat_age_secs);
                if let Some(last) = &p.last_summary {
                    // Strings without their JSON quotes, numbers as they are.
                    let field = |k: &str| match last.get(k) {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                        None => "?".into(),
                    };
                    let error = last.get("error").and_then(|e| e.as_str()).map(|e| format!(", error: {e}")).unwrap_or_default();
                    let (status, trigger, rows, ms) = (field("status"), field("trigger"), field("rows_in"), field("duration_ms"));
                    _ = writeln!(out, "  last run: {status} ({trigger}), rows in {rows}, {ms} ms{error}");
                }
            }
        }
    }
}

fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..columns).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|v| v.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().enumerate().map(|(c, v)| format!("{v:<w$}", w = widths[c])).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
