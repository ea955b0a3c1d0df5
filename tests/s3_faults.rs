//! Every job on S3 through a fault-injecting proxy (503 SlowDown, 500, connections reset
//! mid-body, 2 s stalls): each run finishes, retrying, or fails cleanly and its re-run
//! finishes; the final tables equal those of the same pipeline run without faults.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::Duration;
use deltalake::logstore::object_store::ObjectStoreExt as _;
use e2e_tests::*;
use futures::TryStreamExt;
use reference_data::{MembershipGenerator, OrderGenerator, ProduceOptions, REFERENCE_OWNERS};

/// The shipped pipeline with its lake in a new bucket.
fn shipped_pipeline(services: &Services, bucket: &str, orders: &str, members: &str) -> Pipeline {
    services.create_bucket(bucket);
    Pipeline::shipped(services, Some(&format!("s3://{bucket}/lake")), orders, members)
}

/// Runs a job until it finishes (exit 0, or 3 for nothing new), at most `attempts` times;
/// every failed attempt must be a clean failure (exit 1 with a summary naming the error).
/// Returns the object-store retries the runs counted.
fn run_to_completion(binary: &str, args: &[&str], env: &[(String, String)], attempts: usize) -> u64 {
    let mut retries = 0;
    for attempt in 1..=attempts {
        let r = run(binary, args, env);
        retries += r.summary["store_retries"].as_u64().unwrap_or(0);
        match r.code {
            Some(0) | Some(3) => return retries,
            Some(1) => {
                assert_eq!(r.summary["status"], "failed", "{binary}: a clean failure: {}", r.stderr);
                eprintln!("{binary} attempt {attempt} failed cleanly: {}", r.summary["error"]);
            }
            other => panic!("{binary} {args:?}: exit {other:?} is not a clean failure\n{}", r.stderr),
        }
    }
    panic!("{binary} {args:?} did not finish in {attempts} runs");
}

/// The pipeline's jobs in the order the README's DAG runs them.
fn run_pipeline(config: &str, env: &[(String, String)]) -> u64 {
    let steps: [(&str, Vec<&str>); 7] = [
        ("raw-append", vec![]),
        ("stream-join", vec![]),
        ("merge-upsert", vec![]),
        ("maintenance", vec!["compact", "raw_order", "--min-commit-interval", "0s"]),
        ("maintenance", vec!["vacuum", "raw_order", "--retention-hours", "0", "--allow-short-retention"]),
        ("maintenance", vec!["manifest", "curated"]),
        ("maintenance", vec!["manifest", "processed"]),
    ];
    let mut retries = 0;
    for (binary, extra) in steps {
        let args: Vec<&str> = ["--config", config].into_iter().chain(extra).collect();
        retries += run_to_completion(binary, &args, env, 6);
    }
    retries
}

const TABLES: [(&str, &str); 4] = [
    ("raw/order", "SELECT CAST(order_id AS VARCHAR), order_owner, CAST(order_value AS VARCHAR), CAST(timestamp AS VARCHAR) FROM t"),
    ("raw/member", "SELECT order_owner, membership, CAST(timestamp AS VARCHAR) FROM t"),
    (
        "curated",
        "SELECT CAST(order_id AS VARCHAR), order_owner, CAST(order_value AS VARCHAR), CAST(timestamp AS VARCHAR), membership FROM t",
    ),
    (
        "processed",
        "SELECT CAST(order_id AS VARCHAR), order_owner, CAST(order_value AS VARCHAR), CAST(timestamp AS VARCHAR), membership FROM t",
    ),
];

fn rows(p: &Pipeline, storage: &HashMap<String, String>, path: &str, sql: &str) -> BTreeMap<Vec<String>, usize> {
    multiset(query(&[("t", p.table(path).as_str())], storage, sql))
}

/// The data files a table's symlink manifests list, and the table's active files.
fn manifest_and_active_files(location: &str, storage: &HashMap<String, String>) -> (BTreeSet<String>, BTreeSet<String>) {
    block_on(async {
        let url = url::Url::parse(location).expect("url");
        let table = deltalake::DeltaTableBuilder::from_url(url)
            .expect("builder")
            .with_storage_options(storage.clone())
            .load()
            .await
            .expect("loads");
        let active: BTreeSet<String> = table.get_file_uris().expect("files").collect();
        let store = table.object_store();
        let manifests: Vec<_> =
            store.list(Some(&deltalake::Path::from("_symlink_format_manifest"))).try_collect().await.expect("manifests listed");
        let mut listed = BTreeSet::new();
        for m in manifests {
            let body = store.get(&m.location).await.expect("manifest").bytes().await.expect("read");
            listed.extend(String::from_utf8_lossy(&body).lines().map(str::to_string));
        }
        (listed, active)
    })
}

#[test]
fn every_job_finishes_or_fails_cleanly_under_s3_faults_and_the_tables_equal_a_fault_free_run() {
    let services = Services::get();
    let (orders, members) = (unique("faults-orders"), unique("faults-members"));
    create_topics(&services, &[&orders, &members], 2);
    let owners: Vec<String> = REFERENCE_OWNERS.iter().map(|s| s.to_string()).collect();
    let mut order_gen = OrderGenerator::new(41, owners.clone(), 5, Duration::seconds(10));
    let mut member_gen = MembershipGenerator::new(41, owners, Duration::seconds(60));
    let options = |count| ProduceOptions { count, rate: 0, bad_fraction: 0.0 };
    reference_data::produce(&services.brokers, &orders, &options(3000), || order_gen.next_message()).expect("orders");
    reference_data::produce(&services.brokers, &members, &options(500), || member_gen.next_message()).expect("members");

    let clean = shipped_pipeline(&services, &unique("faults-clean"), &orders, &members);
    run_pipeline(clean.config.to_str().unwrap(), &services.s3_env());

    let proxy = FaultProxy::start(&services, 0.08, 7);
    let faulty = shipped_pipeline(&services, &unique("faults-faulty"), &orders, &members);
    let retries = run_pipeline(faulty.config.to_str().unwrap(), &proxy.s3_env(&services));
    let counts = proxy.counts(Some(0.0));
    eprintln!("faults injected: {counts}; retries counted by the jobs: {retries}");
    for kind in ["503", "500", "reset", "stall"] {
        assert!(counts[kind].as_u64() > Some(0), "no {kind} fault was injected: {counts}");
    }
    assert!(retries > 0, "the summaries count the store's retries");

    let storage = services.s3_options();
    for (path, sql) in TABLES {
        let (want, got) = (rows(&clean, &storage, path, sql), rows(&faulty, &storage, path, sql));
        assert!(!want.is_empty(), "{path} has rows");
        assert_eq!(got, want, "{path} under faults equals the fault-free run");
    }
    for table in ["curated", "processed"] {
        let (listed, active) = manifest_and_active_files(&faulty.table(table), &storage);
        assert_eq!(listed, active, "{table}'s manifests list exactly its active files");
    }
}
