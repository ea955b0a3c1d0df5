//! `lakectl report`: one self-contained HTML file (no script, no network) with, per table, its
//! rows and commits over time, its file sizes now and around its last compaction and its
//! partition sizes, and the pipeline's lag, all from the Delta logs and the status.

use std::fmt::Write as _;

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
    page.push_str(&lag_section(status));
    for table in status.tables.iter().filter(|t| t.exists) {
        page.push_str(&table_section(config, table).await?);
    }
    page.push_str("</body></html>\n");
    Ok(page)
}

fn lag_section(status: &PipelineStatus) -> String {
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
    if charts == 0 {
        out.push_str("<p>No job configured.</p>");
    }
    out
}

async fn table_section(config: &PipelineConfig, status: &TableStatus) -> Result<String, StatusError> {
    let mut out = format!("<h2 id=\"{0}\">{0}</h2><p>{1}</p>", escape(&status.name), escape(&status.location));
    let Some(table) = tables::open_if_exists(&status.location, &config.lake.storage_options).await? else { return Ok(out) };
    let columns = config.tables.get(&status.name).map(|t| t.partition_columns()).unwrap_or_default();
    let History { commits, last_compaction } = history::read(&table).await?;
    let date =
        |ms: f64| chrono::DateTime::from_timestamp_millis(ms as i64).map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default();
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
    let tables::Layout { sizes, partitions } = tables::layout(&table, &columns)?;
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
