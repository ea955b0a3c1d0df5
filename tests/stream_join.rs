//! stream-join end to end: raw tables filled by raw-append from a real tansu broker, joined
//! incrementally, and compared with the same join computed in one shot by DataFusion SQL.

use std::collections::{BTreeMap, HashMap};

use chrono::Duration;
use e2e_tests::*;
use reference_data::{MembershipGenerator, OrderGenerator, ProduceOptions, REFERENCE_OWNERS};

/// The reference join section; tests append their own keys to it.
const REFERENCE_JOIN: &str = include_str!("fixtures/reference_join.toml");
const RAW_ORDER: &str = include_str!("fixtures/raw_order_daily.tables.toml");
const RAW_MEMBER: &str = include_str!("fixtures/raw_member.tables.toml");
const CURATED: &str = include_str!("fixtures/curated_hourly.tables.toml");

fn pipeline(services: &Services, orders: &str, members: &str, join: &str) -> Pipeline {
    Pipeline::new(
        services,
        None,
        &format!(
            r#"
{RAW_ORDER}
{RAW_MEMBER}
{CURATED}
[raw_append]
sources = [{{ topic = "{orders}", table = "raw_order" }}, {{ topic = "{members}", table = "raw_member" }}]

{REFERENCE_JOIN}{join}
"#
        ),
    )
}

/// Orders every 10 s and membership changes every 60 s over about 8 hours, produced in
/// `rounds` slices that advance both streams together (as live topics would).
struct Streams {
    orders: OrderGenerator,
    members: MembershipGenerator,
}

impl Streams {
    fn new(seed: u64) -> Self {
        let owners: Vec<String> = REFERENCE_OWNERS.iter().map(|s| s.to_string()).collect();
        Self {
            orders: OrderGenerator::new(seed, owners.clone(), 5, Duration::seconds(10)),
            members: MembershipGenerator::new(seed, owners, Duration::seconds(60)),
        }
    }

    fn produce(&mut self, services: &Services, orders_topic: &str, members_topic: &str, orders: u64, members: u64) {
        reference_data::produce(&services.brokers, orders_topic, &ProduceOptions { count: orders, rate: 0, bad_fraction: 0.0 }, || {
            self.orders.next_message()
        })
        .expect("orders");
        reference_data::produce(&services.brokers, members_topic, &ProduceOptions { count: members, rate: 0, bad_fraction: 0.0 }, || {
            self.members.next_message()
        })
        .expect("members");
    }
}

const OUTPUT: &str =
    "SELECT CAST(order_id AS VARCHAR), order_owner, CAST(order_value AS VARCHAR), CAST(timestamp AS VARCHAR), membership FROM c";
const ORACLE: &str =
    "SELECT CAST(o.order_id AS VARCHAR), o.order_owner, CAST(o.order_value AS VARCHAR), CAST(o.timestamp AS VARCHAR), m.membership \
     FROM o JOIN m ON o.order_owner = m.order_owner AND o.timestamp >= m.timestamp AND o.timestamp <= m.timestamp + INTERVAL '1 hour'";

fn curated(p: &Pipeline) -> BTreeMap<Vec<String>, usize> {
    multiset(query(&[("c", p.table("curated").as_str())], &HashMap::new(), OUTPUT))
}

fn oracle(p: &Pipeline) -> BTreeMap<Vec<String>, usize> {
    multiset(query(&[("o", p.table("raw/order").as_str()), ("m", p.table("raw/member").as_str())], &HashMap::new(), ORACLE))
}

fn run_ok(binary: &str, config: &str, env: &[(String, String)]) -> RunResult {
    let r = run(binary, &["--config", config], env);
    assert!(r.code == Some(0) || r.code == Some(3), "{binary}: {:?}\n{}", r.code, r.stderr);
    r
}

#[test]
fn curated_equals_the_one_shot_join_whatever_the_batch_sizes_and_runs() {
    let services = Services::get();
    for (case, max_files) in [("one-file", 1usize), ("ten-files", 10), ("all", 100_000)] {
        let (orders, members) = (unique(&format!("sj-o-{case}")), unique(&format!("sj-m-{case}")));
        create_topics(&services, &[&orders, &members], 2);
        let p = pipeline(&services, &orders, &members, &format!("max_files_per_batch = {max_files}"));
        let config = p.config.to_str().unwrap();
        let mut streams = Streams::new(7);
        let mut late = 0;
        let mut last = serde_json::Value::Null;
        for round in 0..4 {
            streams.produce(&services, &orders, &members, 750, 125);
            run_ok("raw-append", config, &[]);
            if round == 2 {
                // A compaction of a source (dataChange=false) must change nothing downstream.
                let c = run("maintenance", &["--config", config, "compact", "raw_member"], &[]);
                assert_eq!(c.code, Some(0), "{}", c.stderr);
            }
            let r = run_ok("stream-join", config, &[]);
            late += r.summary["late_rows"].as_u64().unwrap_or(0);
            last = r.summary;
        }
        // State follows the watermark window (orders: the last ~3 h of 8.3 h; members: ~4 h),
        // not the history.
        let (state_left, state_right) =
            (last["details"]["state_rows_left"].as_u64().unwrap(), last["details"]["state_rows_right"].as_u64().unwrap());
        assert!(state_left > 0 && state_left < 1_500, "{case}: left state {state_left} of 3,000 orders");
        assert!(state_right > 0 && state_right < 350, "{case}: right state {state_right} of 500 members");
        assert_eq!(late, 0, "{case}: on-time input has no late rows");
        // A once run reads to the end: its last batch leaves no source commit behind.
        assert_eq!(last["source_version_lag"], serde_json::json!({"raw_order": 0, "raw_member": 0}), "{case}: {last}");
        let expected = oracle(&p);
        assert!(expected.values().sum::<usize>() > 10_000, "{case}: the data joins plenty of rows");
        assert_eq!(curated(&p), expected, "{case}: curated equals the one-shot join");
        let misplaced = query(
            &[("c", p.table("curated").as_str())],
            &HashMap::new(),
            "SELECT COUNT(*) FROM c WHERE year <> to_char(timestamp, '%Y') OR month <> to_char(timestamp, '%m') \
             OR day <> to_char(timestamp, '%d') OR hour <> to_char(timestamp, '%H')",
        );
        assert_eq!(misplaced, vec![vec!["0".to_string()]], "{case}: every row in the partition of its order time");
        let again = run("stream-join", &["--config", config], &[]);
        assert_eq!(again.code, Some(3), "{case}: nothing new: {}", again.stderr);
    }
}

#[test]
fn killed_at_any_step_and_restarted_the_output_equals_the_oracle() {
    let services = Services::get();
    let (orders, members) = (unique("sj-crash-o"), unique("sj-crash-m"));
    create_topics(&services, &[&orders, &members], 2);
    let p = pipeline(&services, &orders, &members, "max_files_per_batch = 2");
    let config = p.config.to_str().unwrap();
    let mut streams = Streams::new(11);
    let points = [
        ("stream_join::before_state_write", "1*off->return"),
        ("stream_join::after_state_write", "return"),
        ("stream_join::after_sink_commit", "return"),
        ("stream_join::after_done", "2*off->return"),
        ("stream_join::after_sink_commit", "3*off->return"),
        ("stream_join::after_state_write", "2*off->return"),
    ];
    let mut kills = 0;
    for (point, action) in points {
        // Three commits per input, so a run has several batches to crash in.
        for _ in 0..3 {
            streams.produce(&services, &orders, &members, 200, 30);
            run_ok("raw-append", config, &[]);
        }
        let r = run("stream-join", &["--config", config], &[("FAILPOINTS".into(), format!("{point}={action}"))]);
        if r.code.is_none() || r.code == Some(134) {
            kills += 1;
        }
        // A restart without crash points finishes what is there.
        run_ok("stream-join", config, &[]);
    }
    assert!(kills >= 5, "the crash points fired ({kills} of {})", points.len());
    assert_eq!(curated(&p), oracle(&p), "nothing lost, nothing twice");
}

#[test]
fn watermarks_late_rows_bounds_and_left_outer() {
    let services = Services::get();
    let (orders, members) = (unique("sj-wm-o"), unique("sj-wm-m"));
    create_topics(&services, &[&orders, &members], 1);
    let p = pipeline(&services, &orders, &members, "join_type = \"left_outer\"\nlate_table = \"curated_late\"");
    let config = p.config.to_str().unwrap();
    let order = |id: u64, owner: &str, ts: &str| {
        serde_json::json!({"order_id": id, "order_owner": owner, "order_value": id * 10, "timestamp": ts}).to_string()
    };
    let member =
        |owner: &str, tier: &str, ts: &str| serde_json::json!({"order_owner": owner, "membership": tier, "timestamp": ts}).to_string();
    let send = |topic: &str, msgs: Vec<String>| {
        let refs: Vec<(Option<&str>, &[u8])> = msgs.iter().map(|m| (None, m.as_bytes())).collect();
        produce_raw(&services, topic, &refs);
    };
    let rows = |sql: &str| query(&[("c", p.table("curated").as_str())], &HashMap::new(), sql);

    // Orders only: the members input has never reported, so the watermark does not move and
    // nothing is emitted or evicted, whatever the orders' times.
    send(
        &orders,
        vec![order(1, "alice", "2022-04-04 10:00:00"), order(2, "bob", "2022-04-04 10:30:00"), order(3, "carol", "2022-04-04 20:00:00")],
    );
    run_ok("raw-append", config, &[]);
    let r = run_ok("stream-join", config, &[]);
    assert_eq!(r.summary["rows_out"]["curated"], 0, "{}", r.summary);

    // Members at the interval's bounds: alice's at exactly the order's time (lower bound) and
    // bob's exactly an hour before his order (upper bound), plus an equal-timestamp duplicate.
    send(
        &members,
        vec![
            member("alice", "gold", "2022-04-04 10:00:00"),
            member("alice", "gold", "2022-04-04 10:00:00"),
            member("bob", "silver", "2022-04-04 09:30:00"),
            member("bob", "bronze", "2022-04-04 09:29:59"),
        ],
    );
    run_ok("raw-append", config, &[]);
    run_ok("stream-join", config, &[]);
    let joined = rows("SELECT CAST(order_id AS VARCHAR), membership FROM c WHERE membership IS NOT NULL ORDER BY 1, 2");
    assert_eq!(
        joined,
        vec![vec!["1", "gold"], vec!["1", "gold"], vec!["2", "silver"]],
        "bounds inclusive, duplicates kept, 1h+1s excluded"
    );

    // A far-future member moves the members' watermark; the job watermark is the minimum:
    // orders' max (erin, 21:00) − 3h = 18:00. An order at 16:00 is then late; carol's 20:00
    // and erin's 21:00 orders still wait for members.
    send(&members, vec![member("dave", "gold", "2022-04-05 12:00:00")]);
    send(&orders, vec![order(4, "erin", "2022-04-04 21:00:00")]);
    run_ok("raw-append", config, &[]);
    run_ok("stream-join", config, &[]);
    send(&orders, vec![order(5, "frank", "2022-04-04 16:00:00")]);
    run_ok("raw-append", config, &[]);
    let r = run_ok("stream-join", config, &[]);
    assert_eq!(r.summary["late_rows"], 1, "{}", r.summary);
    let late = query(&[("l", p.table("curated_late").as_str())], &HashMap::new(), "SELECT side, row FROM l");
    assert_eq!(late.len(), 1);
    assert_eq!(late[0][0], "left");
    assert!(late[0][1].contains("\"order_id\":5"), "{late:?}");
    let five = rows("SELECT COUNT(*) FROM c WHERE order_id = 5");
    assert_eq!(five, vec![vec!["0"]], "a late row is never joined");

    // Left outer: orders 1 and 2 matched, so the watermark passing them (18:00 > 10:30) emits
    // nothing more for them; orders 3 (20:00) and 4 (21:00) never matched and are emitted
    // null-padded only once the watermark passes them.
    let unmatched = rows("SELECT CAST(order_id AS VARCHAR) FROM c WHERE membership IS NULL ORDER BY 1");
    assert!(unmatched.is_empty(), "nothing is null-padded before the watermark passes it: {unmatched:?}");
    send(&orders, vec![order(6, "alice", "2022-04-05 00:30:00")]);
    run_ok("raw-append", config, &[]);
    run_ok("stream-join", config, &[]);
    let unmatched = rows("SELECT CAST(order_id AS VARCHAR) FROM c WHERE membership IS NULL ORDER BY 1");
    assert_eq!(unmatched, vec![vec!["3"], vec!["4"]], "null-padded once the watermark (00:30 − 3h = 21:30) passed them");
    // More runs change nothing: each unmatched order appears exactly once.
    send(&orders, vec![order(7, "alice", "2022-04-05 03:00:00")]);
    run_ok("raw-append", config, &[]);
    run_ok("stream-join", config, &[]);
    let all = rows("SELECT CAST(order_id AS VARCHAR), COALESCE(membership, 'NULL') FROM c ORDER BY 1, 2");
    assert_eq!(
        all,
        vec![vec!["1", "gold"], vec!["1", "gold"], vec!["2", "silver"], vec!["3", "NULL"], vec!["4", "NULL"]],
        "each unmatched order exactly once; 6 and 7 still wait"
    );
}

/// A one-partition pipeline whose raw tables hold 600 orders and 100 membership changes.
fn landed_streams(name: &str, seed: u64) -> (Services, [String; 2], Pipeline, Streams) {
    let services = Services::get();
    let (orders, members) = (unique(&format!("sj-o-{name}")), unique(&format!("sj-m-{name}")));
    create_topics(&services, &[&orders, &members], 1);
    let p = pipeline(&services, &orders, &members, "");
    let mut streams = Streams::new(seed);
    streams.produce(&services, &orders, &members, 600, 100);
    run_ok("raw-append", p.config.to_str().unwrap(), &[]);
    (services, [orders, members], p, streams)
}

#[test]
fn a_lost_checkpoint_stops_with_exit_5_and_never_joins_a_batch_twice() {
    let (services, [orders, members], p, mut streams) = landed_streams("lost", 11);
    let config = p.config.to_str().unwrap();
    run_ok("stream-join", config, &[]);
    let version = table_version(&p.table("curated"), &HashMap::new());
    // The checkpoint folder is gone (a cleaned-up prefix, a moved setting, a restored bucket).
    std::fs::remove_dir_all(p.table("_checkpoints/stream-join")).expect("checkpoint deleted");
    streams.produce(&services, &orders, &members, 300, 50);
    run_ok("raw-append", config, &[]);
    let lost = run("stream-join", &["--config", config], &[]);
    assert_eq!(lost.code, Some(5), "a checkpoint behind the output stops the run: {}", lost.stderr);
    let error = lost.summary["error"].as_str().unwrap_or_default();
    assert!(error.contains("holds batch 1") && error.contains("restore the checkpoint folder"), "{error}");
    assert_eq!(table_version(&p.table("curated"), &HashMap::new()), version, "nothing was committed");
    // The fix the message names: rebuild the output from scratch.
    std::fs::remove_dir_all(p.table("curated")).expect("output deleted");
    std::fs::remove_dir_all(p.table("_checkpoints/stream-join")).expect("checkpoint deleted");
    run_ok("stream-join", config, &[]);
    assert_eq!(curated(&p), oracle(&p), "the rebuilt output equals the one-shot join");
}

#[test]
fn of_two_instances_planning_the_same_batch_one_stops_and_nothing_is_joined_twice() {
    let (_, _, p, _) = landed_streams("two", 19);
    let config = p.config.to_str().unwrap();
    // The first instance joins batch 1 and waits before recording it; a second instance (a
    // duplicated task) plans the same batch meanwhile, records it and commits it.
    let paused = vec![("FAILPOINTS".to_string(), "stream_join::before_state_write=1*sleep(8000)".to_string())];
    let first = spawn("stream-join", &["--config", config], &paused);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let second = run("stream-join", &["--config", config], &[]);
    assert_eq!(second.code, Some(0), "the second instance joins the batch: {}", second.stderr);
    let first = first.wait_with_output().expect("exited");
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(1), "the first instance stops: {stderr}");
    assert!(stderr.contains("another run of this job planned batch 1 first"), "{stderr}");
    assert_eq!(curated(&p), oracle(&p), "curated equals the one-shot join, once");
}

#[test]
fn a_recreated_source_stops_with_exit_4_never_no_new_data() {
    let (_, _, p, _) = landed_streams("recreated", 23);
    let config = p.config.to_str().unwrap();
    run_ok("stream-join", config, &[]);
    let version = table_version(&p.table("curated"), &HashMap::new());
    // The raw orders table is deleted and landed again from the topic: the same rows under a
    // new table id, which the join must not take for "nothing new" nor read a second time.
    std::fs::remove_dir_all(p.table("raw/order")).expect("source deleted");
    run_ok("raw-append", config, &[]);
    let recreated = run("stream-join", &["--config", config], &[]);
    assert_eq!(recreated.code, Some(4), "{}", recreated.stderr);
    let error = recreated.summary["error"].as_str().unwrap_or_default();
    assert!(error.contains("raw/order") && error.contains("is not the table this job read"), "{error}");
    assert_eq!(table_version(&p.table("curated"), &HashMap::new()), version, "nothing was committed");
}

#[test]
fn the_join_state_reports_its_size_and_a_configured_cap_stops_the_batch_loudly() {
    let (_, _, p, _) = landed_streams("state-cap", 29);
    let config = p.config.to_str().unwrap();
    let capped =
        std::fs::read_to_string(&p.config).unwrap().replace("output = \"curated\"", "output = \"curated\"\nmax_state_bytes = \"1 KiB\"");
    p.write_file("capped.toml", &capped);
    let over = run("stream-join", &["--config", p.dir.path().join("capped.toml").to_str().unwrap()], &[]);
    assert_eq!(over.code, Some(1), "{}", over.stderr);
    let error = over.summary["error"].as_str().unwrap_or_default();
    assert!(error.contains("over stream_join.max_state_bytes = 1024") && error.contains("nothing of the batch was committed"), "{error}");
    assert!(!std::path::Path::new(&p.table("curated/_delta_log/00000000000000000001.json")).exists(), "no batch committed");
    let ok = run_ok("stream-join", config, &[]);
    let bytes = ok.summary["details"]["state_bytes"].as_u64().unwrap_or(0);
    assert!(bytes > 1024, "the summary reports the state's size: {}", ok.summary);
    assert_eq!(curated(&p), oracle(&p), "the uncapped run joins everything");
}

#[test]
fn a_commit_larger_than_a_batch_is_read_in_slices_and_a_killed_slice_re_runs_exactly() {
    let services = Services::get();
    let (orders, members) = (unique("sj-o-slices"), unique("sj-m-slices"));
    create_topics(&services, &[&orders, &members], 1);
    let p = pipeline(&services, &orders, &members, "max_files_per_batch = 2\n");
    let config = p.config.to_str().unwrap();
    let mut streams = Streams::new(37);
    streams.produce(&services, &orders, &members, 600, 100);
    run_ok("raw-append", config, &[]);
    // One raw_member commit of six files (one per owner partition): three batches of two.
    assert_eq!(table_version(&p.table("raw/member"), &HashMap::new()), 1);
    let crash = vec![("FAILPOINTS".to_string(), "stream_join::after_state_write=2*off->return".to_string())];
    let killed = run("stream-join", &["--config", config], &crash);
    assert!(killed.code.is_none() || killed.code == Some(134), "killed in the third slice: {:?} {}", killed.code, killed.stderr);
    let rest = run_ok("stream-join", config, &[]);
    assert_eq!(rest.code, Some(0), "{}", rest.stderr);
    assert_eq!(rest.summary["batches"], 1, "the third slice, re-run from its record: {}", rest.summary);
    let txn = block_on(async {
        let table = delta_io::open_table(&p.table("curated"), &Default::default()).await.expect("output");
        delta_io::read_progress(&table, "stream-join").await.expect("txn")
    });
    assert_eq!(txn, Some(3), "three batches for one commit");
    assert_eq!(curated(&p), oracle(&p), "slices join as the whole commit would");
}

#[test]
fn a_join_may_use_the_kafka_timestamp_raw_append_adds_as_its_event_time() {
    let services = Services::get();
    let (orders, members) = (unique("sj-kts-o"), unique("sj-kts-m"));
    create_topics(&services, &[&orders, &members], 2);
    let p = pipeline(&services, &orders, &members, "");
    for table in ["raw_order", "raw_member"] {
        p.edit(&format!(r#"table = "{table}" }}"#), &format!(r#"table = "{table}", metadata_columns = ["timestamp"] }}"#));
    }
    p.edit(r#"time = "timestamp", delay = "3h""#, r#"time = "_kafka_timestamp", delay = "3h""#);
    p.edit(r#"time = "timestamp", delay = "2h""#, r#"time = "_kafka_timestamp", delay = "2h""#);
    let config = p.config.to_str().unwrap();
    // Members first: every order produced after its owner's changes, within the hour.
    let mut streams = Streams::new(3);
    streams.produce(&services, &orders, &members, 0, 60);
    streams.produce(&services, &orders, &members, 600, 0);
    run_ok("raw-append", config, &[]);
    run_succeeds("stream-join", config, &[]);
    let by_kafka_time = "SELECT CAST(o.order_id AS VARCHAR), o.order_owner, CAST(o.order_value AS VARCHAR), CAST(o.timestamp AS VARCHAR), \
         m.membership FROM o JOIN m ON o.order_owner = m.order_owner AND o._kafka_timestamp >= m._kafka_timestamp \
         AND o._kafka_timestamp <= m._kafka_timestamp + INTERVAL '1 hour'";
    let expected =
        multiset(query(&[("o", p.table("raw/order").as_str()), ("m", p.table("raw/member").as_str())], &HashMap::new(), by_kafka_time));
    assert!(expected.values().sum::<usize>() >= 600, "every order matches its owner's earlier changes: {}", expected.len());
    assert_eq!(curated(&p), expected, "joined on Kafka time, not on the messages' timestamps");
}
