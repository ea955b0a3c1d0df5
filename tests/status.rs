//! `lakectl status` on the shipped pipeline: figures equal what the tables hold, lag 0 after a
//! drain and non-zero with a backlog, and limits that fail the command.

use std::collections::HashMap;

use e2e_tests::*;
use reference_data::{MembershipGenerator, OrderGenerator, ProduceOptions};

fn status(config: &str, extra: &[&str]) -> RunResult {
    run("lakectl", &[&["status", "--config", config, "--json"], extra].concat(), &[])
}

fn produce(services: &Services, orders: &str, members: &str, seed: u64, count: u64) {
    let (mut o, mut m) = (OrderGenerator::reference(seed), MembershipGenerator::reference(seed));
    let options = |count| ProduceOptions { count, rate: 0, bad_fraction: 0.0 };
    reference_data::produce(&services.brokers, orders, &options(count), || o.next_message()).expect("orders");
    reference_data::produce(&services.brokers, members, &options(count / 10), || m.next_message()).expect("members");
}

fn table<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    s["tables"].as_array().and_then(|t| t.iter().find(|t| t["name"] == name)).unwrap_or_else(|| panic!("{name} in {s}"))
}

fn count(p: &Pipeline, path: &str) -> u64 {
    query(&[("t", p.table(path).as_str())], &HashMap::new(), "SELECT COUNT(*) FROM t")[0][0].parse().expect("a count")
}

/// The shipped pipeline on two new two-partition topics.
fn shipped(name: &str) -> (Services, [String; 2], Pipeline) {
    let services = Services::get();
    let (orders, members) = (unique(&format!("{name}-orders")), unique(&format!("{name}-members")));
    create_topics(&services, &[&orders, &members], 2);
    let p = Pipeline::shipped(&services, None, &orders, &members);
    (services, [orders, members], p)
}

#[test]
fn status_shows_what_the_tables_hold_and_how_far_behind_each_job_is() {
    let (services, [orders, members], p) = shipped("status");
    let config = p.config.to_str().unwrap();
    produce(&services, &orders, &members, 5, 2000);

    let before = status(config, &["--max-lag", "0"]);
    assert_eq!(before.code, Some(1), "a backlog crosses --max-lag 0: {}", before.stderr);
    assert_eq!(table(&before.summary, "raw_order")["exists"], false, "{}", before.summary);
    assert!(before.summary["raw_append"]["lag"].as_u64() > Some(0), "{}", before.summary);
    assert_eq!(before.summary["breaches"][0]["what"], "raw-append lag (messages)", "{}", before.summary);

    // Each run leaves its heartbeat file with its summary in it.
    let heartbeats = tempfile::tempdir().unwrap();
    let mut status_args = vec!["--max-lag".to_string(), "0".into(), "--max-versions-behind".into(), "0".into()];
    let mut summaries = Vec::new();
    for job in ["raw-append", "stream-join", "merge-upsert"] {
        let file = heartbeats.path().join(format!("{job}.json")).display().to_string();
        let r = run(job, &["--config", config, "--health-file", &file], &[]);
        assert_eq!(r.code, Some(0), "{job}: {}", r.stderr);
        status_args.extend(["--heartbeat".to_string(), file]);
        summaries.push(r.summary);
    }
    status_args.extend(["--max-progress-age".to_string(), "1h".into()]);
    let drained = status(config, &status_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(drained.code, Some(0), "nothing behind after a drain: {}\n{}", drained.summary, drained.stderr);
    let s = &drained.summary;
    assert_eq!(s["raw_append"]["lag"], 0, "{s}");
    for (name, path) in [("raw_order", "raw/order"), ("raw_member", "raw/member"), ("curated", "curated"), ("processed", "processed")] {
        let t = table(s, name);
        assert_eq!(t["exists"], true, "{t}");
        assert_eq!(t["rows"].as_u64(), Some(count(&p, path)), "{name}'s rows from its statistics equal a count: {t}");
        assert!(t["files"].as_u64() > Some(0) && t["bytes"].as_u64() > Some(0) && t["last_commit"].is_array(), "{t}");
    }
    assert_eq!(table(s, "raw_order")["rows"], 2000, "{s}");
    for (process, summary) in s["processes"].as_array().expect("processes").iter().zip(&summaries) {
        assert_eq!(process["job"], summary["job"], "{process}");
        assert!(process["last_progress_age_secs"].as_u64().is_some(), "each run committed: {process}");
        assert_eq!(&process["last_summary"], summary, "the heartbeat file holds the run's summary line");
    }
    let missing = status(config, &["--heartbeat", "/nonexistent/health.json", "--max-progress-age", "1h"]);
    assert_eq!(missing.code, Some(1), "an unreadable heartbeat crosses --max-progress-age: {}", missing.summary);
    assert!(missing.summary["breaches"][0]["value"].as_str().is_some_and(|v| v.starts_with("unknown")), "{}", missing.summary);
    for job in s["incremental"].as_array().expect("jobs") {
        assert_eq!((job["batch"].as_i64(), job["done"].as_bool()), (Some(1), Some(true)), "{job}");
        assert!(job["sources"].as_array().is_some_and(|s| s.iter().all(|s| s["behind"] == 0)), "{job}");
    }

    // New data landed but not joined yet: the join and the merge fall behind.
    produce(&services, &orders, &members, 6, 500);
    assert!(status(config, &[]).summary["raw_append"]["lag"].as_u64() > Some(0));
    assert_eq!(run("raw-append", &["--config", config], &[]).code, Some(0));
    let behind = status(config, &["--max-versions-behind", "0"]);
    assert_eq!(behind.code, Some(1), "{}", behind.summary);
    assert_eq!(behind.summary["breaches"][0]["what"], "stream-join behind raw_order (versions)", "{}", behind.summary);

    let raw_append_beat = heartbeats.path().join("raw-append.json").display().to_string();
    let text = run("lakectl", &["status", "--config", config, "--heartbeat", &raw_append_beat], &[]);
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    let shown: Vec<&str> = text.stdout.lines().collect();
    assert!(shown.first().is_some_and(|h| h.starts_with("TABLE")), "{shown:?}");
    assert!(shown.iter().any(|l| l.starts_with("processed ")) && shown.iter().any(|l| l.contains("versions behind")), "{shown:?}");
    assert!(shown.iter().any(|l| l.starts_with("raw-append (pid ") && l.contains("last commit")), "{shown:?}");
    let last_run = format!("  last run: ok (once), rows in {},", summaries[0]["rows_in"]);
    assert!(shown.iter().any(|l| l.starts_with(&last_run)), "{last_run} in {shown:?}");
}

/// Runs headless Chromium on `page` with `args`; returns its stdout.
fn chromium(page: &std::path::Path, args: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("profile");
    let flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"];
    let out = std::process::Command::new("chromium")
        .args(flags)
        .args(["--disable-component-update", "--disable-sync", &format!("--user-data-dir={}", profile.path().display())])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs (scripts/setup.sh installs it)");
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_html_report_renders_every_chart_in_chromium() {
    let (services, [orders, members], p) = shipped("report");
    let config = p.config.to_str().unwrap();
    for seed in [1, 2] {
        produce(&services, &orders, &members, seed, 1000);
        for job in ["raw-append", "stream-join", "merge-upsert"] {
            assert_eq!(run(job, &["--config", config], &[]).code, Some(0), "{job}");
        }
    }
    let compacted = run("maintenance", &["--config", config, "compact", "curated", "--min-commit-interval", "0s"], &[]);
    assert_eq!(compacted.code, Some(0), "{}", compacted.stderr);
    let page = p.dir.path().join("report.html");
    let r = run("lakectl", &["report", "--config", config, "--out", page.to_str().unwrap()], &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);

    let html = std::fs::read_to_string(&page).expect("report written");
    assert!(!html.contains("<script") && !html.contains("http"), "self-contained: no script, no link out");
    let charts: Vec<&str> = html.split("<svg class=\"chart\"").skip(1).collect();
    assert!(charts.len() >= 4 * 4 + 5, "the lag (now and per batch over time) and at least four charts per table: {}", charts.len());
    assert!(html.contains("stream-join: versions of raw_order not read yet at each batch"), "the lag over time is drawn");
    for chart in &charts {
        let body = chart.split("</svg>").next().unwrap_or_default();
        assert!(body.contains("class=\"mark\""), "every chart drew its marks: {body}");
    }
    assert!(html.contains("Last compaction: the files it replaced"), "curated's compaction is drawn");

    let dom = chromium(&page, &["--dump-dom"]);
    for text in ["Lakehouse report", "raw_order", "raw_member", "curated", "processed", "Bytes per partition"] {
        assert!(dom.contains(text), "the rendered page shows {text}");
    }
    assert_eq!(dom.matches("<svg class=\"chart\"").count(), charts.len(), "Chromium parsed every chart");
    let shot = p.dir.path().join("report.png");
    chromium(&page, &["--window-size=1280,2400", &format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a drawn page, not a blank one: {} bytes", png.len());
}
