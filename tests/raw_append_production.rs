//! raw-append under the everyday events of production, against a real tansu broker: consumer
//! group scale-out, rolling deploys and kills, a zombie task, idle nights, hostile values and
//! offsets that are gone.

use std::collections::HashMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use e2e_tests::*;
use reference_data::{OrderGenerator, ProduceOptions};

const RAW_ORDER: &str = include_str!("fixtures/raw_order_daily.tables.toml");
const RAW_MEMBER: &str = include_str!("fixtures/raw_member.tables.toml");

/// The reference configuration's two sources (orders by ingestion day, members by owner).
fn reference_tables(orders: &str, members: &str, extra: &str) -> String {
    format!(
        r#"{RAW_ORDER}
{RAW_MEMBER}
[raw_append]
{extra}
sources = [
  {{ topic = "{orders}", table = "raw_order", metadata_columns = ["partition", "offset"] }},
  {{ topic = "{members}", table = "raw_member", metadata_columns = ["partition", "offset"] }},
]
"#
    )
}

/// An orders-only pipeline (offsets recorded, for exactly-once checks).
fn orders_only(services: &Services, topic: &str, extra: &str) -> Pipeline {
    Pipeline::new(
        services,
        None,
        &format!(
            r#"[tables.raw_order]
path = "raw/order"
schema = "order.schema.toml"
partitions = [{{ column = "day", source = "ingestion_time", format = "%d" }}]

[raw_append]
{extra}
sources = [{{ topic = "{topic}", table = "raw_order", metadata_columns = ["partition", "offset"] }}]
"#
        ),
    )
}

/// Produces reference orders keyed by a sequence number, so they spread over every partition
/// (the reference keys, the owners, fill only some of them).
fn produce_orders(services: &Services, topic: &str, seed: u64, count: u64, rate: u64) -> u64 {
    let mut gen = OrderGenerator::reference(seed);
    let mut sequence = seed * 1_000_000;
    let mut next = || {
        sequence += 1;
        (sequence.to_string(), gen.next_message().1)
    };
    reference_data::produce(&services.brokers, topic, &ProduceOptions { count, rate, bad_fraction: 0.0 }, &mut next)
        .expect("produced")
        .messages
}

fn count(location: &str) -> u64 {
    if !Path::new(location).join("_delta_log").exists() {
        return 0;
    }
    query(&[("t", location)], &HashMap::new(), "SELECT COUNT(*) FROM t")[0][0].parse().expect("a count")
}

/// Every offset of every partition exactly once, none missing; returns the total.
fn assert_each_offset_once(location: &str) -> u64 {
    let rows = query(
        &[("o", location)],
        &HashMap::new(),
        "SELECT _kafka_partition, COUNT(*), COUNT(DISTINCT _kafka_offset), MIN(_kafka_offset), MAX(_kafka_offset) FROM o GROUP BY 1 ORDER BY 1",
    );
    let mut total = 0;
    for row in rows {
        let n: u64 = row[1].parse().unwrap();
        assert_eq!(row[2], n.to_string(), "partition {}: an offset landed twice", row[0]);
        assert_eq!((row[3].as_str(), row[4].parse::<u64>().unwrap()), ("0", n - 1), "partition {}: an offset is missing", row[0]);
        total += n;
    }
    total
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}{}", task_logs());
        std::thread::sleep(Duration::from_millis(500));
    }
}

thread_local! {
    /// Log files of the tasks this test started, shown when a wait times out.
    static TASK_LOGS: std::cell::RefCell<Vec<std::path::PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn task_logs() -> String {
    TASK_LOGS.with(|logs| {
        logs.borrow()
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().filter(|l| !l.contains("\"DEBUG\"")).collect();
                format!("\n--- {} (last lines)\n{}", path.display(), tail[tail.len().saturating_sub(8)..].join("\n"))
            })
            .collect()
    })
}

/// A continuous task whose log goes to a file the test can read while it runs.
struct Task {
    child: Child,
    log: std::path::PathBuf,
}

impl Task {
    fn start(config: &str, dir: &Path, name: &str) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = command("raw-append", &["--config", config, "--trigger", "continuous"], &[])
            .stdout(std::process::Stdio::piped())
            .stderr(file)
            .spawn()
            .expect("task started");
        TASK_LOGS.with(|logs| logs.borrow_mut().push(log.clone()));
        Self { child, log }
    }

    /// How many log lines contain `what`.
    fn logged(&self, what: &str) -> usize {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().filter(|l| l.contains(what)).count()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Produces 250 orders/s until the returned flag is lowered; the thread returns the count.
fn steady_producer(services: &Services, topic: &str) -> (std::sync::Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<u64>) {
    let producing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (services, topic, flag) = (services.clone(), topic.to_string(), producing.clone());
    let producer = std::thread::spawn(move || {
        let mut produced = 0;
        for seed in 0.. {
            if !flag.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            produced += produce_orders(&services, &topic, seed, 500, 250);
        }
        produced
    });
    (producing, producer)
}

/// Continuous tasks of one consumer group committing every second.
fn group_pipeline(services: &Services, topic: &str) -> Pipeline {
    let group = unique("scale-group");
    let pipeline = orders_only(services, topic, &format!("interval = \"1s\"\ngroup_id = \"{group}\""));
    // A dead or stopped member loses its partitions after 10 s (librdkafka's default is 45 s).
    let body = std::fs::read_to_string(&pipeline.config).unwrap();
    std::fs::write(&pipeline.config, body.replace("[tables.", "[kafka.properties]\n\"session.timeout.ms\" = \"10000\"\n\n[tables."))
        .unwrap();
    pipeline
}

#[test]
fn a_consumer_group_scales_out_survives_a_rolling_deploy_a_kill_and_a_zombie_and_writes_each_message_once() {
    let services = Services::get();
    let topic = new_topic(&services, "scale-orders", 6);
    // Steady production until the last step: every task below joins (or leaves) while data flows.
    let (producing, producer) = steady_producer(&services, &topic);
    let pipeline = group_pipeline(&services, &topic);
    let config = pipeline.config.to_str().unwrap().to_string();
    let table = pipeline.table("raw/order");
    let dir = pipeline.dir.path();
    // tansu takes ~20 s per group join and loses track of a member that dies while a join is
    // in progress, so each step waits for the group to settle (every member committing again).
    let settled = |tasks: &[&Task], marks: &[usize]| tasks.iter().zip(marks).all(|(t, m)| t.logged("batch committed") > *m);
    let marks = |tasks: &[&Task]| tasks.iter().map(|t| t.logged("batch committed")).collect::<Vec<_>>();
    const SETTLE: Duration = Duration::from_secs(120);

    let first = Task::start(&config, dir, "first");
    wait_until("the first task's first commit", SETTLE, || first.logged("batch committed") > 0);
    let second = Task::start(&config, dir, "second"); // scale out
    wait_until("the second task to commit", SETTLE, || second.logged("batch committed") > 0);
    let m = marks(&[&first]);
    wait_until("the first task to commit after the handover", SETTLE, || settled(&[&first], &m));
    let third = Task::start(&config, dir, "third");
    wait_until("the third task to commit", SETTLE, || third.logged("batch committed") > 0);
    for (name, task) in [("first", &first), ("second", &second), ("third", &third)] {
        assert!(child_running(&task.child), "the {name} task exited on its own:\n{}", task.log_text());
    }

    // Rolling deploy (ECS minimum 100%, maximum 200%): the replacement starts, then the old
    // task is stopped.
    let fourth = Task::start(&config, dir, "fourth");
    wait_until("the fourth task to commit", SETTLE, || fourth.logged("batch committed") > 0);
    signal(&first.child, libc::SIGTERM);
    let (code, first_summary, _) = finish(first.child);
    assert_eq!(code, Some(0), "{}", std::fs::read_to_string(&first.log).unwrap_or_default());
    let m = marks(&[&second, &third, &fourth]);
    wait_until("the group to settle after the deploy", SETTLE, || settled(&[&second, &third, &fourth], &m));

    // A task dies without warning: its partitions move once its session expires.
    let mut second = second;
    second.child.kill().expect("SIGKILL");
    let _ = second.child.wait();
    let reassigned = |a: &[usize]| third.logged("partitions assigned") > a[0] && fourth.logged("partitions assigned") > a[1];
    let before: Vec<usize> = [&third, &fourth].iter().map(|t| t.logged("partitions assigned")).collect();
    wait_until("the dead task's partitions to move", SETTLE, || reassigned(&before));
    let m = marks(&[&third, &fourth]);
    wait_until("the group to settle after the kill", SETTLE, || settled(&[&third, &fourth], &m));

    // A zombie: the third task stops mid-batch until its partitions move to the fourth, then
    // resumes; its stale batch must not land (the exactly-once check below).
    let before = fourth.logged("partitions assigned");
    signal(&third.child, libc::SIGSTOP);
    wait_until("the stopped task's partitions to move", SETTLE, || fourth.logged("partitions assigned") > before);
    let m = marks(&[&fourth]);
    wait_until("the fourth task to commit them", SETTLE, || settled(&[&fourth], &m));
    signal(&third.child, libc::SIGCONT);
    let m = marks(&[&third, &fourth]);
    wait_until("the group to settle after the zombie", SETTLE, || settled(&[&third, &fourth], &m));

    producing.store(false, std::sync::atomic::Ordering::Relaxed);
    let produced = producer.join().expect("producer");
    wait_until("every message in the table", Duration::from_secs(240), || count(&table) >= produced);
    std::thread::sleep(Duration::from_secs(3)); // a late duplicate would land now
    let mut committed_by = vec![first_summary["rows_out"]["raw_order"].as_u64().unwrap_or(0)];
    for (name, task) in [("third", third), ("fourth", fourth)] {
        assert!(child_running(&task.child), "the {name} task exited on its own:\n{}", task.log_text());
        signal(&task.child, libc::SIGTERM);
        let (code, summary, _) = finish(task.child);
        assert_eq!(code, Some(0), "{}", std::fs::read_to_string(&task.log).unwrap_or_default());
        committed_by.push(summary["rows_out"]["raw_order"].as_u64().unwrap_or(0));
    }
    assert!(second.logged("batch committed") > 0, "the killed task committed nothing");
    assert!(committed_by.iter().all(|rows| *rows > 0), "a task that held partitions committed nothing: {committed_by:?}");
    assert_eq!(assert_each_offset_once(&table), produced);
}

#[test]
fn a_task_the_group_assigns_no_partition_keeps_running_and_takes_over_when_the_holder_leaves() {
    let services = Services::get();
    let topic = new_topic(&services, "spare-orders", 1);
    let pipeline = group_pipeline(&services, &topic);
    let config = pipeline.config.to_str().unwrap().to_string();
    let table = pipeline.table("raw/order");
    let dir = pipeline.dir.path();
    const SETTLE: Duration = Duration::from_secs(120);
    let before = produce_orders(&services, &topic, 111, 1_000, 0);
    let first = Task::start(&config, dir, "first");
    wait_until("the first task's commit", SETTLE, || count(&table) >= before);
    // More tasks than partitions (a service scaled past its topic): one task is assigned nothing.
    let spare = Task::start(&config, dir, "spare");
    let holds =
        |t: &Task| t.log_text().lines().rev().find(|l| l.contains("partitions assigned")).is_some_and(|l| l.contains("\"partitions\":1"));
    let rebalanced = || first.logged("partitions assigned") >= 2 && spare.logged("partitions assigned") >= 1;
    wait_until("the group to settle with one task holding the partition", SETTLE, || rebalanced() && holds(&first) != holds(&spare));
    std::thread::sleep(Duration::from_secs(3));
    for (name, task) in [("first", &first), ("spare", &spare)] {
        assert!(child_running(&task.child), "the {name} task exited on its own:\n{}", task.log_text());
    }
    // The task holding the partition is stopped (a deploy): the other takes it over.
    let (holder, other) = if holds(&first) { (first, spare) } else { (spare, first) };
    signal(&holder.child, libc::SIGTERM);
    let holder_log = holder.log.clone();
    let (code, _, _) = finish(holder.child);
    assert_eq!(code, Some(0), "{}", std::fs::read_to_string(&holder_log).unwrap_or_default());
    let after = produce_orders(&services, &topic, 112, 1_000, 0);
    wait_until("the other task to write the new messages", SETTLE, || count(&table) >= before + after);
    assert!(child_running(&other.child), "the remaining task exited on its own:\n{}", other.log_text());
    signal(&other.child, libc::SIGTERM);
    let other_log = other.log.clone();
    let (code, _, _) = finish(other.child);
    assert_eq!(code, Some(0), "{}", std::fs::read_to_string(&other_log).unwrap_or_default());
    assert_eq!(assert_each_offset_once(&table), before + after);
}

#[test]
fn a_zombie_batch_never_lands_and_the_zombie_keeps_running() {
    let services = Services::get();
    let topic = new_topic(&services, "zombie-orders", 2);
    let first = produce_orders(&services, &topic, 71, 3_000, 0);
    let pipeline = orders_only(&services, &topic, "interval = \"500ms\"");
    let config = pipeline.config.to_str().unwrap().to_string();
    let table = pipeline.table("raw/order");
    let zombie = zombie_beside_a_rival(&config);
    assert_eq!(count(&table), first, "the other writer committed everything");
    // The zombie wakes up: its stale batch must be dropped, and it must keep serving.
    let second = produce_orders(&services, &topic, 72, 1_000, 0);
    wait_until("the zombie to write the new messages", Duration::from_secs(90), || count(&table) >= first + second);
    let stderr = zombie_kept_serving(zombie);
    assert!(stderr.contains("progress_moved"), "the drop is logged with its error code");
    assert_eq!(assert_each_offset_once(&table), first + second);
}

#[test]
fn an_idle_task_stays_healthy_and_a_stopped_one_does_not() {
    let services = Services::get();
    let topic = new_topic(&services, "idle-orders", 1);
    let pipeline = orders_only(&services, &topic, "interval = \"1s\"");
    let health = pipeline.dir.path().join("health.json");
    let env = [("LAKEHOUSE_HEALTH_FILE".to_string(), health.display().to_string())];
    let task = spawn("raw-append", &["--config", pipeline.config.to_str().unwrap(), "--trigger", "continuous"], &env);
    let check = |max_age: &str| {
        command("lakectl", &["healthcheck", "--file", health.to_str().unwrap(), "--max-age", max_age], &[]).output().expect("lakectl ran")
    };
    // Idle (nothing to read) for well past --max-age: still healthy.
    std::thread::sleep(Duration::from_secs(20));
    let idle = check("8s");
    assert!(idle.status.success(), "an idle task was reported unhealthy: {}", String::from_utf8_lossy(&idle.stderr));
    let beat: serde_json::Value = serde_json::from_slice(&std::fs::read(&health).unwrap()).unwrap();
    assert!(beat["last_progress_unix_ms"].is_null(), "no batch yet, so no progress: {beat}");
    // Progress is recorded once a batch lands.
    produce_orders(&services, &topic, 81, 10, 0);
    wait_until("progress in the heartbeat file", Duration::from_secs(60), || {
        let beat: serde_json::Value = serde_json::from_slice(&std::fs::read(&health).unwrap_or_default()).unwrap_or_default();
        beat["last_progress_unix_ms"].as_u64().is_some()
    });
    // A stalled task (stopped) goes unhealthy.
    signal(&task, libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(14));
    let stalled = check("8s");
    signal(&task, libc::SIGCONT);
    assert!(!stalled.status.success(), "a stopped task was reported healthy");
    signal(&task, libc::SIGTERM);
    let (code, _, stderr) = finish(task);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn hostile_values_are_dead_lettered_with_reasons_and_their_neighbours_land() {
    let services = Services::get();
    let (orders, members) = (unique("edge-orders"), unique("edge-members"));
    create_topics(&services, &[&orders, &members], 1);
    let pipeline = Pipeline::local(&services, &reference_tables(&orders, &members, "dead_letter_table = \"raw/dead_letter\""));
    let member =
        |owner: &str| serde_json::json!({"order_owner": owner, "membership": "gold", "timestamp": "2022-04-04 11:30:00"}).to_string();
    let long = "x".repeat(300);
    let accents = "é".repeat(100);
    let mut member_msgs: Vec<(String, Option<&str>)> = Vec::new();
    for i in 0..10 {
        member_msgs.push((member(&format!("owner{i}")), None));
        match i {
            2 => member_msgs.push((member(&long), Some("255-byte limit"))),
            5 => member_msgs.push((member(&accents), Some("612 bytes"))),
            7 => member_msgs.push((member("tab\u{1}owner"), Some("control character U+0001"))),
            _ => {}
        }
    }
    let order = |id: &str, value: &str| {
        format!(r#"{{"order_id": {id}, "order_owner": "alice", "order_value": {value}, "timestamp": "2022-04-04 12:00:01"}}"#)
    };
    let order_msgs: Vec<(String, Option<&str>)> = vec![
        (order("1", "870"), None),
        (order("2", "870.9"), Some("870.9 is not an integer")),
        (order("3", "9223372036854775808"), Some("out of range")),
        (order("9223372036854775807", "-9223372036854775808"), None),
        (order("5", "870.0"), None),
        (order("6", "\"12\""), None),
        (order("7", "1e400"), Some("out of range")),
        (order("8", "true"), Some("not a number")),
    ];
    for (topic, msgs) in [(&members, &member_msgs), (&orders, &order_msgs)] {
        let refs: Vec<(Option<&str>, &[u8])> = msgs.iter().map(|(m, _)| (None, m.as_bytes())).collect();
        produce_raw(&services, topic, &refs);
    }
    let config = pipeline.config.to_str().unwrap();
    run_succeeds("raw-append", config, &[]);
    let none = HashMap::new();
    let dlq = pipeline.table("raw/dead_letter");
    let dead = query(&[("d", dlq.as_str())], &none, "SELECT topic, \"offset\", error FROM d ORDER BY topic, \"offset\"");
    let mut expected: Vec<(String, usize, &str)> = Vec::new();
    for (topic, msgs) in [(&members, &member_msgs), (&orders, &order_msgs)] {
        expected.extend(msgs.iter().enumerate().filter_map(|(offset, (_, reason))| reason.map(|r| (topic.to_string(), offset, r))));
    }
    expected.sort();
    assert_eq!(dead.len(), expected.len(), "{dead:?}");
    for ((topic, offset, reason), row) in expected.iter().zip(&dead) {
        assert_eq!((&row[0], &row[1]), (topic, &offset.to_string()));
        assert!(row[2].contains(reason), "{topic}@{offset}: expected '{reason}' in '{}'", row[2]);
    }
    let member_rows = query(&[("m", pipeline.table("raw/member").as_str())], &none, "SELECT order_owner FROM m ORDER BY order_owner");
    let owners: Vec<String> = member_rows.into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(owners, (0..10).map(|i| format!("owner{i}")).collect::<Vec<_>>(), "the neighbours are written");
    let order_rows = query(
        &[("o", pipeline.table("raw/order").as_str())],
        &none,
        "SELECT CAST(order_id AS VARCHAR), CAST(order_value AS VARCHAR) FROM o ORDER BY _kafka_offset",
    );
    let expected_orders: Vec<Vec<String>> = [("1", "870"), ("9223372036854775807", "-9223372036854775808"), ("5", "870"), ("6", "12")]
        .iter()
        .map(|(a, b)| vec![a.to_string(), b.to_string()])
        .collect();
    assert_eq!(order_rows, expected_orders, "integers are exact");
    assert_nothing_new("raw-append", config);
}

#[test]
fn offsets_gone_with_a_recreated_topic_stop_the_run_unless_skipping_is_configured() {
    let services = Services::get();
    let topic = new_topic(&services, "recreated-orders", 1);
    produce_orders(&services, &topic, 91, 50, 0);
    let pipeline = orders_only(&services, &topic, "dead_letter_table = \"raw/dead_letter\"");
    let config = pipeline.config.to_str().unwrap().to_string();
    run_succeeds("raw-append", &config, &[]);
    // The topic is deleted and created again with fewer messages than the table has read.
    block_on(reference_data::delete_topics(&services.brokers, &[&topic])).expect("topic deleted");
    std::thread::sleep(Duration::from_secs(1));
    create_topics(&services, &[&topic], 1);
    produce_orders(&services, &topic, 92, 10, 0);
    let stopped = run("raw-append", &["--config", &config], &[]);
    assert_eq!(stopped.code, Some(4), "{}", stopped.stderr);
    let error = stopped.summary["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains(&format!("{topic}[0]")) && error.contains("next offset to read is 50") && error.contains("on_missing_offsets"),
        "{error}"
    );
    let table = pipeline.table("raw/order");
    assert_eq!(count(&table), 50, "nothing was written or skipped");

    let skipping = orders_only(&services, &topic, "dead_letter_table = \"raw/dead_letter\"\non_missing_offsets = \"skip\"");
    std::fs::write(&pipeline.config, std::fs::read_to_string(&skipping.config).unwrap().replace(&skipping.lake_root, &pipeline.lake_root))
        .unwrap();
    let skipped = run("raw-append", &["--config", &config], &[]);
    assert_eq!(skipped.code, Some(0), "{}", skipped.stderr);
    assert_eq!(count(&table), 60, "the recreated topic's messages are read from its start");
    let none = HashMap::new();
    let marker = query(&[("d", pipeline.table("raw/dead_letter").as_str())], &none, "SELECT \"offset\", error FROM d");
    assert_eq!(marker.len(), 1, "{marker:?}");
    assert_eq!(marker[0][0], "50");
    assert!(marker[0][1].contains("recreated") && marker[0][1].contains("skip"), "{}", marker[0][1]);
    let again = run("raw-append", &["--config", &config], &[]);
    assert_eq!(again.code, Some(3), "the skip is recorded, not found again: {}", again.stderr);
}

#[test]
fn an_idle_second_source_does_not_hold_up_the_busy_one() {
    let services = Services::get();
    let (orders, members) = (unique("busy-orders"), unique("quiet-members"));
    create_topics(&services, &[&orders], 3);
    create_topics(&services, &[&members], 2);
    let produced = produce_orders(&services, &orders, 101, 30_000, 0);
    let pipeline = Pipeline::local(&services, &reference_tables(&orders, &members, "max_batch_rows = 5000"));
    let r = run_succeeds("raw-append", pipeline.config.to_str().unwrap(), &[]);
    assert_eq!(r.summary["rows_out"]["raw_order"], produced);
    assert_eq!(assert_each_offset_once(&pipeline.table("raw/order")), produced);
}

#[test]
fn an_unknown_topic_fails_the_run_instead_of_waiting_for_it() {
    let services = Services::get();
    let missing = unique("no-such-topic");
    for extra in ["", "group_id = \"unknown-topic-group\""] {
        let pipeline = orders_only(&services, &missing, extra);
        let r = run(
            "raw-append",
            &["--config", pipeline.config.to_str().unwrap(), "--trigger", if extra.is_empty() { "once" } else { "continuous" }],
            &[],
        );
        assert_eq!(r.code, Some(1), "{}", r.stderr);
        let error = r.summary["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(&missing) && error.contains("does not exist"), "{error}");
    }
}

#[test]
fn brokers_that_refuse_the_sasl_handshake_fail_the_run_at_once_with_their_reason() {
    let services = Services::get();
    let topic = new_topic(&services, "sasl-orders", 1);
    let pipeline = orders_only(&services, &topic, "");
    // The test broker speaks plaintext only, so it refuses a SASL client at the handshake the
    // way a broker refuses wrong credentials.
    let sasl = "[kafka]\nsecurity_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"lakehouse\"\nsasl_password = \"wrong\"\n";
    let config = std::fs::read_to_string(&pipeline.config).unwrap().replacen("[kafka]\n", sasl, 1);
    std::fs::write(&pipeline.config, config).unwrap();
    let r = run("raw-append", &["--config", pipeline.config.to_str().unwrap()], &[]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let error = r.summary["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("SASL SCRAM-SHA-512") && error.contains("retrying does not help"), "librdkafka's reason, as fatal: {error}");
    let waited = r.summary["duration_ms"].as_u64().unwrap_or(u64::MAX);
    assert!(waited < 30_000, "failed without waiting out the metadata timeout: {waited} ms");
}

#[test]
fn unreachable_brokers_fail_the_run_with_the_clients_last_reason() {
    let services = Services::get();
    let pipeline = orders_only(&services, "orders", "");
    // Nothing listens on port 1: every connection is refused.
    let nowhere = [("LAKEHOUSE_KAFKA_BROKERS".to_string(), "127.0.0.1:1".to_string())];
    let r = run("raw-append", &["--config", pipeline.config.to_str().unwrap()], &nowhere);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let error = r.summary["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("no answer from the brokers") && error.contains("127.0.0.1:1") && error.contains("Connection refused"),
        "{error}"
    );
    assert!(r.stderr.contains("librdkafka"), "librdkafka's own log lines reach the job's log: {}", r.stderr);
}
