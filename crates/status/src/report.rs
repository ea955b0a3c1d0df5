//! `lakectl report`: one self-contained HTML file (no script, no network) with, per table, its
//! rows and commits over time, its file sizes now and around its last compaction and its
//! partition sizes, and the pipeline's lag, all from the Delta logs and the status.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use deltalake::DeltaTable;
use pipeline_config::PipelineConfig;

use crate::history::{self, History};
use crate::svg::{self, escape};
use crate::tables::{self, TableStatus};
use crate::{render, PipelineStatus, StatusError};

/// Partitions shown per table (the largest).
const MAX_PARTITIONS: usize = 24;

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222}h2{margin-top:32px;border-bottom:1px solid #ccc}\
figure{display:inline-block;margin:8px 16px 8px 0}figcaption{font-size:13px;margin-bottom:4px}\
svg .axis{stroke:#888}svg .tick{font-size:10px;fill:#555}svg rect.mark{fill:#4c78a8}\
svg polyline.mark{stroke:#f58518;stroke-width:2}svg circle.mark{fill:#f58518}pre{background:#f6f6f6;padding:8px}";

/// The report of `config`'s tables and jobs as HTML.
pub async fn html(config: &PipelineConfig, status: &PipelineStatus) -> Result<String, StatusError> {
    let mut page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Lakehouse report</title><style>{STYLE}</style></head><body>\
         <h1>Lakehouse report</h1><p>Generated {}.</p><pre>{}</pre>",
        chrono::Utc::now().to_rfc3339(),
        escape(&render(status))
    );
    // Each table is opened and its log read once, for the lag and for its own section.
    let mut tables = Vec::new();
    let mut histories = BTreeMap::new();
    for table in status.tables.iter().filter(|t| t.exists) {
        if let Some(loaded) = delta_io::open_if_exists(&table.location, &config.lake.storage_options).await? {
            histories.insert(table.name.clone(), history::read(&loaded).await?);
            tables.push((table, loaded));
        }
    }
    page.push_str(&lag_section(config, status, &histories));
    for (status, table) in &tables {
        page.push_str(&table_section(config, status, table, &histories[&status.name])?);
    }
    page.push_str("</body></html>\n");
    Ok(page)
}

fn lag_section(config: &PipelineConfig, status: &PipelineStatus, histories: &BTreeMap<String, History>) -> String {
    let mut out = String::from("<h2>Lag</h2>");
    let mut charts = 0;
    if let Some(raw) = &status.raw_append {
        let bars: Vec<(String, f64)> = raw.partitions.iter().map(|p| (format!("{}[{}]", p.topic, p.partition), p.lag as f64)).collect();
        charts += push(&mut out, svg::bars(&format!("{}: messages not in the tables yet, per partition", raw.job_id), &bars));
    }
    let behind: Vec<(String, f64)> = status
        .incremental
        .iter()
        .flat_map(|j| j.sources.iter().map(move |s| (format!("{} ← {}", j.job, s.table), s.behind as f64)))
        .collect();
    charts += push(&mut out, svg::bars("Source versions not read yet, per job and source", &behind));
    for (job, output, key, source) in job_sources(config) {
        let (Some(out_history), Some(source_history)) = (histories.get(&output), histories.get(&source)) else { continue };
        let title = format!("{job}: versions of {source} not read yet at each batch, over time");
        charts += push(&mut out, svg::line(&title, &lag_over_time(job, key, out_history, source_history), date));
    }
    if charts == 0 {
        out.push_str("<p>No job configured.</p>");
    }
    out
}

/// Each incremental job's output table and sources: (job, output, key in its commit info, source).
fn job_sources(config: &PipelineConfig) -> Vec<(&'static str, String, &'static str, String)> {
    let mut out = Vec::new();
    if let Some(j) = &config.stream_join {
        out.push(("stream-join", j.output.name.clone(), "left", j.left.table.name.clone()));
        out.push(("stream-join", j.output.name.clone(), "right", j.right.table.name.clone()));
    }
    if let Some(j) = &config.merge_upsert {
        out.push(("merge-upsert", j.target.name.clone(), "source", j.source.name.clone()));
    }
    out
}

/// At each of `job`'s output commits: the source's newest version at that time minus the version
/// the batch read to (its commit info's `key.to`).
fn lag_over_time(job: &str, key: &str, output: &History, source: &History) -> Vec<(f64, f64)> {
    output
        .commits
        .iter()
        .filter_map(|c| {
            let info = c.job.as_ref().filter(|j| j["name"] == job)?;
            let read_to = info[key]["to"].as_u64()?;
            let newest = source.commits.iter().filter(|s| s.time_ms <= c.time_ms).map(|s| s.version).max()?;
            Some((c.time_ms as f64, newest.saturating_sub(read_to) as f64))
        })
        .collect()
}

fn date(ms: f64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64).map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

fn table_section(config: &PipelineConfig, status: &TableStatus, table: &DeltaTable, history: &History) -> Result<String, StatusError> {
    let mut out = format!("<h2 id=\"{0}\">{0}</h2><p>{1}</p>", escape(&status.name), escape(&status.location));
    let History { commits, last_compaction } = history;
    let columns = config.tables.get(&status.name).map(|t| t.partition_columns()).unwrap_or_default();
    let mut rows = 0u64;
    let cumulative: Vec<(f64, f64)> = commits
        .iter()
        .map(|c| {
            rows += c.rows_added;
            (c.time_ms as f64, rows as f64)
        })
        .collect();
    push(&mut out, svg::line("Rows written over time (cumulative, data-changing commits still in the log)", &cumulative, date));
    let versions: Vec<(f64, f64)> = commits.iter().map(|c| (c.time_ms as f64, c.version as f64)).collect();
    push(&mut out, svg::line("Commits over time (version)", &versions, date));
    let tables::Layout { sizes, partitions } = tables::layout(table, &columns)?;
    push(&mut out, svg::size_histogram("Active files by size", &sizes));
    if let Some((before, after)) = &last_compaction {
        push(&mut out, svg::size_histogram("Last compaction: the files it replaced, by size", before));
        push(&mut out, svg::size_histogram("Last compaction: the files it wrote, by size", after));
    }
    if !columns.is_empty() {
        let bars: Vec<(String, f64)> = partitions.into_iter().take(MAX_PARTITIONS).map(|(p, b)| (p, b as f64)).collect();
        push(&mut out, svg::bars(&format!("Bytes per partition (the {MAX_PARTITIONS} largest)"), &bars));
    }
    let _ = write!(out, "<p>{} commits in the log; {} active files.</p>", commits.len(), sizes.len());
    Ok(out)
}

/// Appends a chart that drew something; returns 1 when it did.
fn push(out: &mut String, chart: Option<String>) -> usize {
    chart.map(|c| out.push_str(&c)).map_or(0, |_| 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Commit;

    fn commit(version: u64, time_ms: i64, job: Option<serde_json::Value>) -> Commit {
        Commit { version, time_ms, operation: "WRITE".into(), rows_added: 0, job }
    }

    #[test]
    fn lag_at_a_batch_is_the_sources_newest_version_then_minus_what_it_read() {
        let source = History { commits: (0..10).map(|v| commit(v, v as i64 * 100, None)).collect(), last_compaction: None };
        let batch = |to: u64| Some(serde_json::json!({"name": "stream-join", "left": {"to": to}}));
        let other = Some(serde_json::json!({"name": "merge-upsert"}));
        let output = History {
            commits: vec![commit(1, 350, batch(2)), commit(2, 950, batch(9)), commit(3, 960, None), commit(4, 990, other)],
            last_compaction: None,
        };
        assert_eq!(lag_over_time("stream-join", "left", &output, &source), vec![(350.0, 1.0), (950.0, 0.0)]);
    }
}
