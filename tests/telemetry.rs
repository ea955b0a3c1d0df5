//! Operating a job: Prometheus metrics, the heartbeat health check and CloudWatch EMF records,
//! each compared with the run's summary and with what landed in the tables.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use e2e_tests::*;

const ORDERS: &str = include_str!("fixtures/raw_order_daily.tables.toml");

fn pipeline(services: &Services, topic: &str, extra: &str) -> Pipeline {
    Pipeline::new(services, None, &format!("{ORDERS}\n[raw_append]\ndead_letter_table = \"raw/dead_letter\"\n{extra}\nsources = [{{ topic = \"{topic}\", table = \"raw_order\" }}]\n"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// GET /metrics (plain HTTP/1.1, as a Prometheus scrape) → sample name with labels → value.
fn scrape(port: u16) -> HashMap<String, f64> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint listens");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_string(), v.parse::<f64>().unwrap_or(f64::NAN))))
        .collect()
}

fn count(location: &str) -> u64 {
    query(&[("t", location)], &HashMap::new(), "SELECT COUNT(*) FROM t")[0][0].parse().expect("a count")
}

fn healthcheck(file: &Path, max_age: &str) -> std::process::Output {
    command("lakectl", &["healthcheck", "--file", file.to_str().unwrap(), "--max-age", max_age], &[]).output().expect("lakectl ran")
}

#[test]
fn continuous_run_serves_prometheus_metrics_and_a_heartbeat_that_agree_with_its_tables() {
    let services = Services::get();
    let topic = new_topic(&services, "telemetry", 2);
    let p = pipeline(&services, &topic, "interval = \"1s\"");
    let config = p.config.to_str().unwrap().to_string();
    let health = p.dir.path().join("health/raw-append.json");
    let port = free_port();
    let env = [("LAKEHOUSE_HEALTH_FILE".to_string(), health.display().to_string())];
    let mut child =
        spawn("raw-append", &["--config", &config, "--trigger", "continuous", "--metrics-addr", &format!("127.0.0.1:{port}")], &env);

    let malformed = produce_orders(&services, &topic, 7, 1000, 0, 0.05).malformed;
    assert!(malformed > 0);
    let (table, dead) = (p.table("raw/order"), p.table("raw/dead_letter"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let metrics = loop {
        std::thread::sleep(Duration::from_millis(500));
        assert!(child.try_wait().expect("status").is_none(), "the continuous run exited early");
        assert!(Instant::now() < deadline, "the continuous run did not commit everything");
        if !(Path::new(&table).join("_delta_log").exists() && Path::new(&dead).join("_delta_log").exists()) {
            continue;
        }
        let metrics = scrape(port);
        if metrics.get(r#"lakehouse_rows_in_total{job="raw-append"}"#) == Some(&1000.0)
            && count(&table) + count(&dead) == 1000
            && metrics.get(r#"lakehouse_table_version{job="raw-append",table="raw_order"}"#)
                == Some(&(table_version(&table, &HashMap::new()) as f64))
        {
            break metrics;
        }
    };
    let rows = count(&table);
    assert_eq!(rows, 1000 - malformed);
    assert_eq!(metrics[r#"lakehouse_rows_out_total{job="raw-append",table="raw_order"}"#], rows as f64);
    assert_eq!(metrics[r#"lakehouse_dead_letters_total{job="raw-append"}"#], malformed as f64);
    assert_eq!(metrics[r#"lakehouse_commit_retries_total{job="raw-append",table="raw_order"}"#], 0.0);
    for partition in 0..2 {
        // Caught up: nothing between the high watermark and what was read.
        assert_eq!(
            metrics[&format!(r#"lakehouse_consumer_lag_messages{{job="raw-append",topic="{topic}",partition="{partition}"}}"#)],
            0.0
        );
    }
    let batches = metrics[r#"lakehouse_batches_total{job="raw-append"}"#];
    assert!(batches >= 1.0);
    assert_eq!(metrics[r#"lakehouse_batch_duration_seconds_count{job="raw-append"}"#], batches);
    assert!(metrics[r#"lakehouse_last_batch_timestamp_seconds{job="raw-append"}"#] > 1.7e9);

    // Alive and making progress (it beats while idle, too).
    let ok = healthcheck(&health, "30s");
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("healthy: raw-append"));

    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("exited");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    // The summary carries the same counters.
    assert_eq!(summary["rows_in"], 1000);
    assert_eq!(summary["rows_out"]["raw_order"], rows);
    assert_eq!(summary["dead_letters"], malformed);
    assert_eq!(summary["commit_retries"], 0);
    assert_eq!(summary["batches"].as_f64(), Some(batches));
    assert!(summary["batch_duration"]["max_ms"].as_u64().is_some_and(|ms| ms > 0), "{summary}");
    assert_eq!(summary["consumer_lag"][format!("{topic}[0]")], 0);
    assert_eq!(summary["consumer_lag"][format!("{topic}[1]")], 0);

    // The job is gone: its heartbeat goes stale.
    std::thread::sleep(Duration::from_millis(2100));
    let stale = healthcheck(&health, "1s");
    assert_eq!(stale.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&stale.stderr).contains("last showed life"), "{}", String::from_utf8_lossy(&stale.stderr));
    let missing = healthcheck(&p.dir.path().join("absent.json"), "1m");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no heartbeat"));
}

#[test]
fn a_metrics_address_in_use_is_a_configuration_error() {
    let services = Services::get();
    let p = pipeline(&services, &unique("unused"), "");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let r = run("raw-append", &["--config", p.config.to_str().unwrap(), "--metrics-addr", &addr], &[]);
    assert_eq!(r.code, Some(78), "{}", r.stderr);
    assert!(r.summary["error"].as_str().unwrap_or_default().contains("--metrics-addr"), "{}", r.summary);
}

#[test]
fn emf_records_add_up_to_the_summary() {
    let services = Services::get();
    let topic = new_topic(&services, "emf", 2);
    let p = pipeline(&services, &topic, "max_batch_rows = 150");
    let malformed = produce_orders(&services, &topic, 7, 600, 0, 0.1).malformed;
    let r = run("raw-append", &["--config", p.config.to_str().unwrap(), "--emf", "--emf-namespace", "LakehouseTest"], &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let records: Vec<serde_json::Value> =
        r.stderr.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).filter(|v| v.get("_aws").is_some()).collect();
    assert_eq!(records.len() as u64, r.summary["batches"].as_u64().unwrap(), "one record per batch");
    assert!(records.len() >= 4, "600 messages in batches of at most 150");
    let mut sums: HashMap<String, f64> = HashMap::new();
    for record in &records {
        // The EMF specification: metric definitions under _aws, values and dimensions top level.
        let aws = &record["_aws"];
        assert!(aws["Timestamp"].as_u64().is_some_and(|t| t > 1_700_000_000_000));
        let directive = &aws["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "LakehouseTest");
        assert_eq!(directive["Dimensions"], serde_json::json!([["Job"]]));
        assert_eq!(record["Job"], "raw-append");
        for metric in directive["Metrics"].as_array().expect("metrics") {
            let name = metric["Name"].as_str().expect("name");
            assert!(["Count", "Milliseconds"].contains(&metric["Unit"].as_str().unwrap_or_default()));
            let value = record[name].as_f64().unwrap_or_else(|| panic!("{name} has no numeric value in {record}"));
            *sums.entry(name.to_string()).or_default() += value;
        }
    }
    assert_eq!(sums["RowsIn"], 600.0);
    assert_eq!(sums["RowsIn"], r.summary["rows_in"].as_f64().unwrap());
    assert_eq!(sums["RowsOut"], r.summary["rows_out"]["raw_order"].as_f64().unwrap());
    assert_eq!(sums["DeadLetters"], malformed as f64);
    assert_eq!(sums["CommitRetries"], 0.0);
}
