//! The soak's checks: every table against an expectation computed independently of the jobs,
//! from what was produced and by one-shot SQL (DataFusion) over the raw tables.

use std::collections::BTreeMap;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use deltalake::datafusion::prelude::SessionContext;

use crate::producer::Produced;
use crate::report::Check;
use crate::shape::{Shape, Table};
use crate::SoakError;

const JOINED: &str = "CAST(order_id AS VARCHAR), order_owner, CAST(order_value AS VARCHAR), CAST(timestamp AS VARCHAR)";

/// Runs every check.
pub(crate) fn run(shape: &Shape, produced: &Produced) -> Result<Vec<Check>, SoakError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| SoakError::Options(e.to_string()))?;
    runtime.block_on(async {
        let ctx = SessionContext::new();
        for (alias, table) in [("o", &shape.orders), ("m", &shape.members), ("c", &shape.curated), ("p", &shape.processed)] {
            register(&ctx, alias, table, shape).await?;
        }
        let mut checks = vec![
            exactly_once(&ctx, "o", &shape.orders, produced.orders).await?,
            exactly_once(&ctx, "m", &shape.members, produced.members).await?,
        ];
        let (lower, upper) = shape.join_bounds_seconds;
        let oracle = format!(
            "SELECT CAST(o.order_id AS VARCHAR), o.order_owner, CAST(o.order_value AS VARCHAR), CAST(o.timestamp AS VARCHAR), m.membership \
             FROM o JOIN m ON o.order_owner = m.order_owner AND o.timestamp >= m.timestamp + INTERVAL '{lower} seconds' \
             AND o.timestamp <= m.timestamp + INTERVAL '{upper} seconds'"
        );
        let curated = format!("SELECT {JOINED}, membership FROM c");
        checks.push(equal(&ctx, &format!("{} equals the one-shot join of the raw tables", shape.curated.name), &curated, &oracle).await?);
        checks.extend(latest_per_key(&ctx, shape).await?);
        Ok(checks)
    })
}

async fn register(ctx: &SessionContext, alias: &str, table: &Table, shape: &Shape) -> Result<(), SoakError> {
    let read = |message: String| SoakError::Read { table: table.name.clone(), message };
    let loaded = delta_io::open_table(&table.location, &shape.storage).await.map_err(|e| read(e.to_string()))?;
    loaded.update_datafusion_session(&ctx.state()).map_err(|e| read(e.to_string()))?;
    let provider = loaded.table_provider().await.map_err(|e| read(e.to_string()))?;
    ctx.register_table(alias, provider).map_err(|e| read(e.to_string()))?;
    Ok(())
}

/// Each produced message has its own event time: the table holds exactly as many rows as were
/// produced, each time once (nothing lost, nothing doubled).
async fn exactly_once(ctx: &SessionContext, alias: &str, table: &Table, produced: u64) -> Result<Check, SoakError> {
    let rows = query(ctx, &format!("SELECT COUNT(*), COUNT(DISTINCT timestamp) FROM {alias}")).await?;
    let found = rows.first().cloned().unwrap_or_default();
    let expected = vec![produced.to_string(), produced.to_string()];
    Ok(Check::new(
        &format!("{} holds every produced message exactly once", table.name),
        found == expected,
        format!("rows, distinct times: {found:?}; produced {produced}"),
    ))
}

/// The merge target holds, per key, the latest row of the join output (ties on the sequence:
/// any of the tied rows), and one row per key.
async fn latest_per_key(ctx: &SessionContext, shape: &Shape) -> Result<Vec<Check>, SoakError> {
    let name = &shape.processed.name;
    let latest = format!(
        "SELECT DISTINCT {JOINED} FROM (SELECT *, RANK() OVER (PARTITION BY order_id ORDER BY timestamp DESC) AS r FROM c) t WHERE r = 1"
    );
    let mut checks = vec![
        equal(ctx, &format!("{name} equals the latest row per key of {}", shape.curated.name), &format!("SELECT {JOINED} FROM p"), &latest)
            .await?,
    ];
    let keys = query(ctx, "SELECT COUNT(*), COUNT(DISTINCT order_id) FROM p").await?;
    let one_per_key = keys.first().is_some_and(|r| r.len() == 2 && r[0] == r[1]);
    checks.push(Check::new(&format!("{name} holds one row per key"), one_per_key, format!("rows, keys: {keys:?}")));
    let foreign = query(
        ctx,
        "SELECT COUNT(*) FROM p LEFT ANTI JOIN c ON p.order_id = c.order_id AND p.timestamp = c.timestamp AND p.membership = c.membership",
    )
    .await?;
    let none = foreign.first().is_some_and(|r| r.first().is_some_and(|n| n == "0"));
    checks.push(Check::new(
        &format!("{name}'s memberships come from its key's joined rows"),
        none,
        format!("rows without one: {foreign:?}"),
    ));
    Ok(checks)
}

/// Compares two queries as multisets of rows.
async fn equal(ctx: &SessionContext, name: &str, found_sql: &str, expected_sql: &str) -> Result<Check, SoakError> {
    let (found, expected) = (multiset(query(ctx, found_sql).await?), multiset(query(ctx, expected_sql).await?));
    let missing = expected.iter().filter(|(row, n)| found.get(*row) != Some(n)).count();
    let extra = found.iter().filter(|(row, n)| expected.get(*row) != Some(n)).count();
    let detail = format!(
        "{} rows, expected {}; {missing} expected rows missing or miscounted, {extra} unexpected",
        found.values().sum::<usize>(),
        expected.values().sum::<usize>()
    );
    Ok(Check::new(name, missing == 0 && extra == 0, detail))
}

fn multiset(rows: Vec<Vec<String>>) -> BTreeMap<Vec<String>, usize> {
    let mut out = BTreeMap::new();
    for r in rows {
        *out.entry(r).or_insert(0) += 1;
    }
    out
}

async fn query(ctx: &SessionContext, sql: &str) -> Result<Vec<Vec<String>>, SoakError> {
    let read = |message: String| SoakError::Read { table: sql.to_string(), message };
    let batches = ctx.sql(sql).await.map_err(|e| read(e.to_string()))?.collect().await.map_err(|e| read(e.to_string()))?;
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| read(e.to_string()))?;
        rows.extend((0..batch.num_rows()).map(|r| formatters.iter().map(|f| f.value(r).to_string()).collect()));
    }
    Ok(rows)
}
