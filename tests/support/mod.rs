//! Support for end-to-end tests: the services started by `scripts/test.sh`, unique topics,
//! pipeline configurations in temp folders, running the job binaries, and reading tables back
//! with DataFusion (an independent reader of what the jobs wrote).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::util::display::{ArrayFormatter, FormatOptions};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::DeltaTableBuilder;

mod fault_proxy;
mod kinesis;
pub use fault_proxy::FaultProxy;
pub use kinesis::{create_stream, put};

/// A Kinesis client of the moto server the services run.
pub fn kinesis_client(services: &Services) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(&block_on(services.aws_config(&services.s3_endpoint)))
}

/// Loopback addresses of the services `scripts/services.sh` started.
#[derive(Debug, Clone)]
pub struct Services {
    /// Kafka bootstrap servers (tansu).
    pub brokers: String,
    /// moto S3 endpoint.
    pub s3_endpoint: String,
}

impl Services {
    /// Reads them from the environment `scripts/test.sh` sets up.
    pub fn get() -> Self {
        let need = |var: &str| {
            std::env::var(var)
                .unwrap_or_else(|_| panic!("{var} is not set: run the tests with scripts/test.sh, which starts tansu and moto"))
        };
        Self { brokers: need("LAKEHOUSE_KAFKA_BROKERS"), s3_endpoint: need("LAKEHOUSE_TEST_S3_ENDPOINT") }
    }

    /// Environment for a job that writes to the moto S3 server.
    pub fn s3_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.s3_endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Storage options for reading tables on the moto S3 server.
    pub fn s3_options(&self) -> HashMap<String, String> {
        self.s3_env().into_iter().chain([("AWS_ALLOW_HTTP".to_string(), "true".to_string())]).collect()
    }

    /// An AWS SDK configuration for the moto server at `endpoint` (the server itself, or a
    /// fault proxy in front of it), with the test region and credentials of [`Self::s3_env`].
    pub async fn aws_config(&self, endpoint: &str) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_glue::config::Credentials::new("test", "test", None, None, "test"))
            .load()
            .await
    }

    /// Creates a bucket on the moto server (a plain S3 `PUT /bucket`).
    pub fn create_bucket(&self, bucket: &str) {
        use std::io::{Read, Write};
        let host = self.s3_endpoint.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(host).expect("moto is reachable");
        write!(stream, "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").expect("request sent");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer read");
        assert!(answer.starts_with("HTTP/1.1 200"), "create bucket {bucket}: {answer}");
    }
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// Path of a job built in the same profile as this test: a link named after the job to the
/// one `lakehouse` executable (scripts/test.sh makes them; made here when missing).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target profile folder");
    let path = dir.join(name);
    assert!(
        dir.join("lakehouse").exists(),
        "{} is missing: build the binaries first (scripts/test.sh does)",
        dir.join("lakehouse").display()
    );
    if name != "lakehouse" && !path.is_symlink() {
        // A temporary link renamed over the name, so parallel tests never see it half made.
        let temporary = dir.join(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&temporary);
        std::os::unix::fs::symlink("lakehouse", &temporary).expect("job link created");
        std::fs::rename(&temporary, &path).expect("job link in place");
    }
    path
}

/// Blocks on a future with a fresh runtime.
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime").block_on(f)
}

/// Creates `topics` with `partitions` partitions each.
pub fn create_topics(services: &Services, topics: &[&str], partitions: i32) {
    block_on(reference_data::create_topics(&services.brokers, topics, partitions)).expect("topics created");
}

/// A topic named after `prefix` (made unique), created with `partitions` partitions.
pub fn new_topic(services: &Services, prefix: &str, partitions: i32) -> String {
    let topic = unique(prefix);
    create_topics(services, &[&topic], partitions);
    topic
}

/// Produces `count` reference orders (generator seed `seed`, `rate` per second or 0 for as fast
/// as possible, `bad_fraction` malformed) and waits for acknowledgement.
pub fn produce_orders(
    services: &Services,
    topic: &str,
    seed: u64,
    count: u64,
    rate: u64,
    bad_fraction: f64,
) -> reference_data::ProduceReport {
    let mut gen = reference_data::OrderGenerator::reference(seed);
    let options = reference_data::ProduceOptions { count, rate, bad_fraction };
    reference_data::produce(&services.brokers, topic, &options, || gen.next_message()).expect("produced")
}

/// Produces raw payloads (with keys) to a topic and waits for acknowledgement.
pub fn produce_raw(services: &Services, topic: &str, messages: &[(Option<&str>, &[u8])]) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &services.brokers).set("linger.ms", "5").create().expect("producer");
    for (key, payload) in messages {
        let mut record = BaseRecord::<str, [u8]>::to(topic).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        producer.send(record).map_err(|(e, _)| e).expect("queued");
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");
}

/// Produces `messages` without keys and waits for acknowledgement.
pub fn produce_unkeyed(services: &Services, topic: &str, messages: &[String]) {
    let messages: Vec<(Option<&str>, &[u8])> = messages.iter().map(|m| (None, m.as_bytes())).collect();
    produce_raw(services, topic, &messages);
}

/// A pipeline configuration in a temp folder, with the repository's schema files.
pub struct Pipeline {
    /// Holds the folder for the test's lifetime.
    pub dir: tempfile::TempDir,
    /// The configuration file.
    pub config: PathBuf,
    /// The lake root as written in the configuration.
    pub lake_root: String,
}

impl Pipeline {
    /// Writes `body` (TOML after the [lake] and [kafka] sections) with the lake at `lake_root`
    /// (None: a `lake` folder inside the temp folder).
    pub fn new(services: &Services, lake_root: Option<&str>, body: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // Read at run time: a shared target directory may hold a test binary built from another
        // checkout of the same sources.
        let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR");
        let schemas = Path::new(&crate_dir).join("../schemas").canonicalize().expect("schemas folder");
        for entry in std::fs::read_dir(&schemas).expect("schemas") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy schema");
        }
        let lake_root = lake_root.map(str::to_string).unwrap_or_else(|| dir.path().join("lake").display().to_string());
        let config = dir.path().join("pipeline.toml");
        std::fs::rename(&config, dir.path().join("pipeline.toml.shipped")).expect("the shipped pipeline set aside");
        std::fs::write(&config, format!("[lake]\nroot = \"{lake_root}\"\n\n[kafka]\nbrokers = \"{}\"\n\n{body}", services.brokers))
            .expect("config written");
        Self { dir, config, lake_root }
    }

    /// A pipeline of configuration `body` whose lake is a local folder.
    pub fn local(services: &Services, body: &str) -> Self {
        Self::new(services, None, body)
    }

    /// The shipped pipeline (`schemas/pipeline.toml`, the reference shape) with its lake at
    /// `lake_root` (None: a folder inside the temp folder), the services' broker and the topics
    /// `orders` and `members`.
    pub fn shipped(services: &Services, lake_root: Option<&str>, orders: &str, members: &str) -> Self {
        let p = Self::new(services, lake_root, "");
        let shipped = std::fs::read_to_string(p.dir.path().join("pipeline.toml.shipped")).expect("shipped pipeline");
        let config = shipped
            .replace("root = \"lake\"", &format!("root = \"{}\"", p.lake_root))
            .replace("brokers = \"127.0.0.1:9092\"", &format!("brokers = \"{}\"", services.brokers))
            .replace("topic = \"orders\"", &format!("topic = \"{orders}\""))
            .replace("topic = \"members\"", &format!("topic = \"{members}\""));
        assert!(config.contains(&p.lake_root) && config.contains(orders) && config.contains(members), "the shipped pipeline changed shape");
        p.write_file("pipeline.toml", &config);
        p
    }

    /// Rewrites the configuration, replacing `from` with `to` (which must be there).
    pub fn edit(&self, from: &str, to: &str) {
        let config = std::fs::read_to_string(&self.config).expect("config");
        assert!(config.contains(from), "{from} is not in the configuration");
        std::fs::write(&self.config, config.replace(from, to)).expect("config written");
    }

    /// Writes an extra file (e.g. a schema) next to the configuration.
    pub fn write_file(&self, name: &str, body: &str) {
        std::fs::write(self.dir.path().join(name), body).expect("file written");
    }

    /// Location of a table path under the lake root.
    pub fn table(&self, path: &str) -> String {
        format!("{}/{path}", self.lake_root)
    }

    /// [`query_table`] over the table at `path` under the lake root.
    pub fn query(&self, path: &str, sql: &str) -> Vec<Vec<String>> {
        query_table(self.table(path).as_str(), sql)
    }
}

/// The outcome of a job run.
#[derive(Debug)]
pub struct RunResult {
    /// Exit code (None when killed by a signal).
    pub code: Option<i32>,
    /// The JSON summary (last stdout line).
    pub summary: serde_json::Value,
    /// Everything on stderr.
    pub stderr: String,
    /// Everything on stdout.
    pub stdout: String,
}

/// Builds a command for a job binary with extra environment.
pub fn command(binary: &str, args: &[&str], env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(bin(binary));
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs a job to completion.
pub fn run(binary: &str, args: &[&str], env: &[(String, String)]) -> RunResult {
    let out = command(binary, args, env).output().expect("job started");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout.lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or(serde_json::Value::Null);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    RunResult { code: out.status.code(), summary, stderr, stdout: stdout.into_owned() }
}

/// A trigger-once run of `binary` over `config` that must exit 0.
pub fn run_succeeds(binary: &str, config: &str, env: &[(String, String)]) -> RunResult {
    let r = run(binary, &["--config", config], env);
    assert_eq!(r.code, Some(0), "{binary}: {}", r.stderr);
    r
}

/// Starts a job without waiting.
pub fn spawn(binary: &str, args: &[&str], env: &[(String, String)]) -> Child {
    command(binary, args, env).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("job started")
}

/// Runs `sql` against tables registered under the given names and renders every value as a
/// string (timestamps in RFC 3339, nulls as "NULL").
pub fn query(tables: &[(&str, &str)], storage: &HashMap<String, String>, sql: &str) -> Vec<Vec<String>> {
    block_on(async {
        let ctx = SessionContext::new();
        for (name, location) in tables {
            let table = load_table(location, storage).await;
            table.update_datafusion_session(&ctx.state()).expect("object store registered");
            let provider = table.table_provider().await.expect("provider");
            ctx.register_table(*name, provider).expect("registered");
        }
        let batches = ctx.sql(sql).await.expect("query plans").collect().await.expect("query runs");
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in batches {
            let formatters: Vec<_> =
                batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter")).collect();
            for r in 0..batch.num_rows() {
                rows.push(formatters.iter().map(|f| f.value(r).to_string()).collect());
            }
        }
        rows
    })
}

/// The current version of a table.
pub fn table_version(location: &str, storage: &HashMap<String, String>) -> u64 {
    block_on(async { load_table(location, storage).await.version().expect("a version") })
}

async fn load_table(location: &str, storage: &HashMap<String, String>) -> deltalake::DeltaTable {
    let url = if location.starts_with("s3://") {
        url::Url::parse(location).expect("url")
    } else {
        url::Url::from_directory_path(Path::new(location).canonicalize().expect("table folder")).expect("url")
    };
    DeltaTableBuilder::from_url(url).expect("builder").with_storage_options(storage.clone()).load().await.expect("table loads")
}

/// Rows as a multiset (row -> count), for order-insensitive comparison that still sees duplicates.
pub fn multiset(rows: Vec<Vec<String>>) -> BTreeMap<Vec<String>, usize> {
    let mut out = BTreeMap::new();
    for r in rows {
        *out.entry(r).or_insert(0) += 1;
    }
    out
}

/// How a crash test ends one run of a job.
pub enum Kill {
    /// Arm a crash point (FAILPOINTS syntax) in a trigger-once run.
    At(&'static str, &'static str),
    /// SIGKILL a continuous run after this many milliseconds.
    After(u64),
}

/// Runs `job` once per step of `plan` (a pause before each), each run ended as the step says;
/// a run that was not killed must end with 0 or 3. Returns how many runs were killed.
pub fn run_kill_plan(job: &str, config: &str, env: &[(String, String)], plan: &[Kill]) -> usize {
    let mut crashes = 0;
    for kill in plan {
        std::thread::sleep(Duration::from_millis(400));
        let killed = match kill {
            Kill::At(point, action) => {
                let mut env = env.to_vec();
                env.push(("FAILPOINTS".into(), format!("{point}={action}")));
                let r = run(job, &["--config", config], &env);
                assert!(r.code.is_none() || matches!(r.code, Some(0 | 3)), "run ended badly: {}", r.stderr);
                r.code.is_none()
            }
            Kill::After(ms) => {
                let mut child = spawn(job, &["--config", config, "--trigger", "continuous"], env);
                std::thread::sleep(Duration::from_millis(*ms));
                let alive = child.try_wait().expect("status").is_none();
                let _ = child.kill();
                let _ = child.wait();
                alive
            }
        };
        crashes += usize::from(killed);
    }
    crashes
}

/// [`run_kill_plan`], at least `killed` of whose runs must really be killed, then [`drain`].
pub fn kill_then_drain(job: &str, config: &str, env: &[(String, String)], plan: &[Kill], killed: usize) {
    let crashes = run_kill_plan(job, config, env, plan);
    assert!(crashes >= killed, "only {crashes} runs were actually killed");
    drain(job, config, env);
}

/// A zombie writer: a continuous run that uploads its first batch and then stalls 12 s before
/// the commit (as a task stuck in an upload while its partitions move to another owner), and,
/// meanwhile, a trigger-once run of the same job that takes the same partitions and commits.
/// Returns the zombie, still asleep.
pub fn zombie_beside_a_rival(config: &str) -> Child {
    let zombie = spawn(
        "raw-append",
        &["--config", config, "--trigger", "continuous"],
        &[("FAILPOINTS".into(), "raw_append::after_upload=1*sleep(12000)".into())],
    );
    std::thread::sleep(Duration::from_secs(5));
    let rival = run("raw-append", &["--config", config], &[]);
    assert_eq!(rival.code, Some(0), "{}", rival.stderr);
    zombie
}

/// Checks that a zombie from [`zombie_beside_a_rival`] still runs a while after catching up,
/// then stops it: it must exit 0 having dropped its stale batch. Returns its stderr.
pub fn zombie_kept_serving(zombie: Child) -> String {
    std::thread::sleep(Duration::from_secs(2));
    assert!(child_running(&zombie), "the zombie exited instead of re-reading its partitions");
    signal(&zombie, libc::SIGTERM);
    let (code, summary, stderr) = finish(zombie);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(summary["batches_dropped"].as_u64().unwrap_or(0) >= 1, "the stale batch was not dropped: {summary}\n{stderr}");
    stderr
}

/// The routed DMS table `shop_orders`, the `processed` table and a merge-upsert of the first
/// into the second (deletes applied), with `extra` lines in `[merge_upsert]`.
pub fn dms_orders_merge(extra: &str) -> String {
    format!(
        r#"
[tables.shop_orders]
path = "raw/dms/shop_orders"
schema = "dms/shop_orders.schema.toml"

[tables.processed]
path = "processed"
schema = "processed.schema.toml"

[merge_upsert]
source = "shop_orders"
target = "processed"
key = ["order_id"]
sequence = "_dms_timestamp"
operation = "_dms_operation"
delete_values = ["delete"]
{extra}
"#
    )
}

/// Trigger-once runs of `job` until one finds nothing new (exit 3), for at most 5 minutes.
pub fn drain(job: &str, config: &str, env: &[(String, String)]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let r = run(job, &["--config", config], env);
        match r.code {
            Some(3) => return,
            Some(0) => assert!(std::time::Instant::now() < deadline, "still finding data after 5 minutes"),
            other => panic!("run exited {other:?}: {}", r.stderr),
        }
    }
}

/// The row a reference order message becomes, as `query` renders it (order_id, order_owner,
/// order_value, timestamp in RFC 3339).
pub fn order_row(json: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(json).expect("generated JSON");
    vec![
        v["order_id"].to_string(),
        v["order_owner"].as_str().unwrap_or_default().to_string(),
        v["order_value"].to_string(),
        v["timestamp"].as_str().unwrap_or_default().replace(' ', "T") + "Z",
    ]
}

/// Sends `sig` to a child.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Waits for a child and returns its exit code, summary line and stderr.
pub fn finish(child: Child) -> (Option<i32>, serde_json::Value, String) {
    let out = child.wait_with_output().expect("exited");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout.lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or(serde_json::Value::Null);
    (out.status.code(), summary, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// True while a child runs (not exited, not reaped).
pub fn child_running(child: &Child) -> bool {
    // SAFETY: signal 0 only checks that the process exists (it is our unreaped child).
    let alive = unsafe { libc::kill(child.id() as i32, 0) } == 0;
    let mut status = 0;
    // SAFETY: non-blocking waitpid on our own child; a reaped child would have exited.
    let reaped = unsafe { libc::waitpid(child.id() as i32, &mut status, libc::WNOHANG) };
    alive && reaped == 0
}

/// A trigger-once run of `job` that must find nothing new (exit 3).
pub fn assert_nothing_new(job: &str, config: &str) {
    let again = run(job, &["--config", config], &[]);
    assert_eq!(again.code, Some(3), "{job} found something new: {}", again.stderr);
}

/// An AWS DMS record of `schema.table` (`data` left out when None), committed at second
/// `second` of 2026-11-30T10:00.
pub fn dms(schema: &str, table: &str, record_type: &str, operation: &str, second: u32, data: Option<&str>) -> String {
    let data = data.map_or(String::new(), |d| format!(r#""data": {d}, "#));
    format!(
        r#"{{{data}"metadata": {{"timestamp": "2026-11-30T10:00:{second:02}.000001Z", "record-type": "{record_type}", "operation": "{operation}", "partition-key-type": "schema-table", "schema-name": "{schema}", "table-name": "{table}"}}}}"#
    )
}

/// [`query`] over one table, named `t` in `sql`.
pub fn query_table(location: &str, sql: &str) -> Vec<Vec<String>> {
    query(&[("t", location)], &HashMap::new(), sql)
}

/// Expected rows written as string literals.
pub fn rows<const N: usize>(rows: &[[&str; N]]) -> Vec<Vec<String>> {
    rows.iter().map(|r| r.iter().map(|v| v.to_string()).collect()).collect()
}

/// Waits until the table at `location` exists and holds at least `rows` rows; fails with
/// `what` after `within`.
pub fn wait_for_rows(location: &str, rows: usize, within: Duration, what: &str) {
    let deadline = std::time::Instant::now() + within;
    let count = || query_table(location, "SELECT COUNT(*) FROM t")[0][0].parse::<usize>().unwrap_or(0);
    while !Path::new(location).join("_delta_log").exists() || count() < rows {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}
