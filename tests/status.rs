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

#[test]
fn status_shows_what_the_tables_hold_and_how_far_behind_each_job_is() {
    let services = Services::get();
    let (orders, members) = (unique("status-orders"), unique("status-members"));
    create_topics(&services, &[&orders, &members], 2);
    let p = Pipeline::shipped(&services, None, &orders, &members);
    let config = p.config.to_str().unwrap();
    produce(&services, &orders, &members, 5, 2000);

    let before = status(config, &["--max-lag", "0"]);
    assert_eq!(before.code, Some(1), "a backlog crosses --max-lag 0: {}", before.stderr);
    assert_eq!(table(&before.summary, "raw_order")["exists"], false, "{}", before.summary);
    assert!(before.summary["raw_append"]["lag"].as_u64() > Some(0), "{}", before.summary);
    assert_eq!(before.summary["breaches"][0]["what"], "raw-append lag (messages)", "{}", before.summary);

    for job in ["raw-append", "stream-join", "merge-upsert"] {
        let r = run(job, &["--config", config], &[]);
        assert_eq!(r.code, Some(0), "{job}: {}", r.stderr);
    }
    let drained = status(config, &["--max-lag", "0", "--max-versions-behind", "0"]);
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

    let text = run("lakectl", &["status", "--config", config], &[]);
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    let shown: Vec<&str> = text.stdout.lines().collect();
    assert!(shown.first().is_some_and(|h| h.starts_with("TABLE")), "{shown:?}");
    assert!(shown.iter().any(|l| l.starts_with("processed ")) && shown.iter().any(|l| l.contains("versions behind")), "{shown:?}");
}
