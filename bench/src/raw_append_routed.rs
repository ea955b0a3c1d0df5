//! `lakebench raw-append-routed`: one AWS DMS topic of reference orders spread over N source
//! tables, routed into N Delta tables, against the same topic written into one table (same
//! bytes, same run, the shipped configuration's shape otherwise).

use clap::Args;
use reference_data::{create_topics, produce, OrderGenerator, ProduceOptions};

use crate::common::{median, paired_share, RawRunArgs};
use crate::raw_append::shipped_run;

/// Options of the routed raw-append benchmark.
#[derive(Debug, Args)]
pub struct RoutedBench {
    /// DMS records in the topic.
    #[arg(long, default_value_t = 2_000_000)]
    messages: u64,
    /// Source tables the records are spread over (one routed table each).
    #[arg(long, default_value_t = 10)]
    tables: u32,
    #[command(flatten)]
    run: RawRunArgs,
    #[command(flatten)]
    kafka: job_runtime::BrokerArgs,
}

/// The shipped configuration's orders source, as the benchmark edits it.
const SHIPPED_ORDERS: &str = r#"{ topic = "orders", table = "raw_order", metadata_columns = ["partition", "offset", "timestamp"] }"#;

impl RoutedBench {
    /// Produces the topic, then measures single-table and routed runs alternately.
    pub fn run(&self) -> Result<(), String> {
        let brokers = self.kafka.brokers.as_str();
        std::fs::create_dir_all(&self.run.work_dir).map_err(|e| e.to_string())?;
        let schemas = std::fs::canonicalize(&self.run.schemas).map_err(|e| format!("{}: {e}", self.run.schemas.display()))?;
        let (topic, members) = (format!("bench-dms-{}", std::process::id()), format!("bench-dms-members-{}", std::process::id()));
        crate::common::tokio_block(create_topics(brokers, &[&topic], self.run.partitions)).map_err(|e| e.to_string())?;
        crate::common::tokio_block(create_topics(brokers, &[&members], 2)).map_err(|e| e.to_string())?;
        let mut gen = OrderGenerator::reference(7);
        let mut i = 0u64;
        let tables = u64::from(self.tables.max(1));
        produce(brokers, &topic, &ProduceOptions { count: self.messages, rate: 0, bad_fraction: 0.0 }, || {
            let (key, order) = gen.next_message();
            i += 1;
            (key, dms_record(&order, i % tables))
        })
        .map_err(|e| e.to_string())?;
        let order_schema = std::fs::read_to_string(schemas.join("order.schema.toml")).map_err(|e| e.to_string())?;
        let files: Vec<(String, String)> = (0..tables).map(|t| (format!("dms/shop_orders{t}.schema.toml"), order_schema.clone())).collect();
        let members_edit = ("topic = \"members\"".to_string(), format!("topic = \"{members}\""));
        let single = [
            (
                SHIPPED_ORDERS.to_string(),
                SHIPPED_ORDERS.replace("\"orders\"", &format!("\"{topic}\"")).replace("table =", "format = \"dms\", table ="),
            ),
            members_edit.clone(),
        ];
        let routed_source = format!(
            r#"{{ topic = "{topic}", format = "dms", metadata_columns = ["partition", "offset", "timestamp"], route = {{ schemas = "dms", path = "raw/dms/{{table}}", partitions = {PARTITIONS} }} }}"#
        );
        // The same tables without schema files: inferred from their first records, and every
        // record scanned for new fields (schema evolution's steady-state cost).
        let inferred_source = format!(
            r#"{{ topic = "{topic}", format = "dms", unknown_fields = "add_columns", metadata_columns = ["partition", "offset", "timestamp"], route = {{ infer = true, path = "raw/dms/{{table}}", partitions = {PARTITIONS} }} }}"#
        );
        let routed = [(SHIPPED_ORDERS.to_string(), routed_source), members_edit.clone()];
        let inferred = [(SHIPPED_ORDERS.to_string(), inferred_source), members_edit];
        println!(
            "raw-append routed: {} DMS records (topic {topic}) over {tables} tables, {} partitions, median of {} runs",
            self.messages, self.run.partitions, self.run.runs
        );
        let (mut one, mut many, mut infer) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..self.run.runs {
            let s = shipped_run(&self.run.work_dir, &schemas, &format!("dms-one-{run}"), brokers, (&single, &[]))?;
            let r = shipped_run(&self.run.work_dir, &schemas, &format!("dms-routed-{run}"), brokers, (&routed, &files))?;
            let n = shipped_run(&self.run.work_dir, &schemas, &format!("dms-inferred-{run}"), brokers, (&inferred, &[]))?;
            let mb = |bytes: u64| bytes as f64 / 1e6;
            println!(
                "    run {}: one table {:.2}s ({:.0} MB), {tables} routed tables {:.2}s ({:.0} MB), {tables} inferred {:.2}s ({:.0} MB)",
                run + 1,
                s.0,
                mb(s.1),
                r.0,
                mb(r.1),
                n.0,
                mb(n.1)
            );
            one.push(s.0);
            many.push(r.0);
            infer.push(n.0);
        }
        let rates = |seconds: &[f64]| -> Vec<f64> { seconds.iter().map(|s| self.messages as f64 / s).collect() };
        let (one_paired, many_paired) = (paired_share(&rates(&many), &rates(&one)), paired_share(&rates(&infer), &rates(&many)));
        let (one, many, infer) = (median(one.into_iter()), median(many.into_iter()), median(infer.into_iter()));
        let rate = |seconds: f64| self.messages as f64 / seconds;
        println!("one table:       {:>10.0} msg/s", rate(one));
        println!(
            "{tables} routed tables: {:>10.0} msg/s, {:.0}% of one table ({:.0}% paired)",
            rate(many),
            100.0 * one / many,
            100.0 * one_paired
        );
        println!(
            "{tables} inferred tables: {:>10.0} msg/s, {:.0}% of routed with schema files ({:.0}% paired)",
            rate(infer),
            100.0 * many / infer,
            100.0 * many_paired
        );
        println!("(paired: the median over runs of each run's own share, which cancels the machine's drift between runs)");
        Ok(())
    }
}

/// The shipped orders table's ingestion-time partitions, for every routed table.
const PARTITIONS: &str = r#"[{ column = "year", source = "ingestion_time", format = "%Y" }, { column = "month", source = "ingestion_time", format = "%m" }, { column = "day", source = "ingestion_time", format = "%d" }, { column = "hour", source = "ingestion_time", format = "%H" }]"#;

/// A DMS insert record of source table `shop.orders<table>` carrying `order`.
fn dms_record(order: &str, table: u64) -> String {
    format!(
        r#"{{"data": {order}, "metadata": {{"timestamp": "2026-11-30T10:00:00.000001Z", "record-type": "data", "operation": "insert", "partition-key-type": "schema-table", "schema-name": "shop", "table-name": "orders{table}"}}}}"#
    )
}
