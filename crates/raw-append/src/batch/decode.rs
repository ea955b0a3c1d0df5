//! A slice's decoding on a blocking worker: messages are selected per route (DMS control records
//! skipped, routed messages split by table), decoded into table rows, and scanned for new fields.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use json_arrow::{DecodeRun, FieldPicker, Picked, SchemaInference};
use kafka_source::RawBatch;
use pipeline_config::SourceFormat;

use crate::dms;
use crate::router::{PlaceScratch, Placement, Router};
use crate::routes::Route;
use crate::sinks::Sinks;
use crate::table_rows::{self, ChunkRows};
use crate::RawAppendError;

/// A slice's decoding, on a blocking worker.
pub(super) type Decoding = tokio::task::JoinHandle<Result<DecodedSlice, RawAppendError>>;

/// Waits for a slice's decoding.
pub(super) async fn joined(decoding: Decoding) -> Result<DecodedSlice, RawAppendError> {
    decoding.await.map_err(|e| RawAppendError::Internal(format!("decode worker: {e}")))?
}

/// A slice and its table rows.
pub(super) struct DecodedSlice {
    pub(super) slice: RawBatch,
    /// The routes it was decoded with.
    pub(super) routes: Arc<Vec<Arc<Route>>>,
    /// Per route with schema evolution: the fields its rows hold that it does not read yet.
    pub(super) discovered: Vec<(usize, SchemaInference)>,
    /// (source, table) of inferred tables without a route yet: their messages wait for it.
    pub(super) new_tables: BTreeSet<(String, String)>,
    /// One per chunk of the slice, in its order: the rows of each route the chunk feeds.
    pub(super) rows: Vec<Vec<(usize, ChunkRows)>>,
    /// DMS records skipped, one per chunk.
    pub(super) skipped: Vec<dms::Skipped>,
    /// Time spent decoding.
    pub(super) took: Duration,
}

/// Decodes a slice's chunks into table rows on a blocking worker (CPU work, kept off the
/// async workers).
pub(super) fn spawn_decode(sinks: &Sinks, slice: RawBatch, ingested_at: DateTime<Utc>) -> Decoding {
    let (routes, by_topic, routers) = (sinks.routes.clone(), sinks.by_topic.clone(), sinks.routers.clone());
    tokio::task::spawn_blocking(move || {
        job_runtime::lower_cpu_work_priority();
        let started = Instant::now();
        let mut rows = Vec::with_capacity(slice.chunks.len());
        let mut skipped = Vec::with_capacity(slice.chunks.len());
        let mut discovered: BTreeMap<usize, SchemaInference> = BTreeMap::new();
        let mut new_tables = BTreeSet::new();
        for (key, chunk) in &slice.chunks {
            let home = by_topic[key.topic.as_ref()];
            let payloads = chunk.payloads();
            let ChunkDecoded { parts: decoded, skipped: skips, new_tables: new } =
                decode_chunk(home, &routes, routers.get(key.topic.as_ref()), &payloads)?;
            new_tables.extend(new.into_iter().map(|name| (key.topic.to_string(), name)));
            let mut parts = Vec::with_capacity(decoded.len());
            for (idx, decoded) in decoded {
                let route = &routes[idx];
                let built = table_rows::build(route, key, chunk, decoded, ingested_at)?;
                if let Some(fields) = &route.evolution {
                    let inference = discovered.entry(idx).or_insert_with(|| SchemaInference::for_flatten(route.flatten()));
                    built.messages.iter().for_each(|&m| fields.observe(payloads[m as usize], inference));
                }
                parts.push((idx, built));
            }
            rows.push(parts);
            skipped.push(skips);
        }
        let discovered = discovered.into_iter().filter(|(_, found)| !found.is_empty()).collect();
        Ok(DecodedSlice { slice, routes, discovered, new_tables, rows, skipped, took: started.elapsed() })
    })
}

/// A chunk decoded: the rows of each route it feeds, the DMS records skipped, and the inferred
/// tables its messages need that have no route yet.
#[derive(Default)]
struct ChunkDecoded {
    parts: Vec<(usize, json_arrow::Decoded)>,
    skipped: dms::Skipped,
    new_tables: BTreeSet<String>,
}

/// Decodes a chunk of the source whose table is route `home`: DMS control records are skipped,
/// a routed source's messages are placed by table, each message classified, placed and fed to
/// its table's decoder in one go while its bytes are in cache.
fn decode_chunk(home: usize, routes: &[Arc<Route>], router: Option<&Router>, payloads: &[&[u8]]) -> Result<ChunkDecoded, RawAppendError> {
    let mut out = ChunkDecoded::default();
    if routes[home].format == SourceFormat::Json && router.is_none() {
        out.parts.push((home, routes[home].decoder.decode(payloads)?));
        return Ok(out);
    }
    let mut runs: Vec<Option<DecodeRun<'_, '_>>> = (0..routes.len()).map(|_| None).collect();
    let mut unrouted = Vec::new();
    let mut scratch = PlaceScratch::default();
    // A DMS record's kind and its routing fields are picked in one pass (both sit in `metadata`).
    let dms_fields = match routes[home].format {
        SourceFormat::Dms => dms::fields().to_vec(),
        SourceFormat::Json => Vec::new(),
    };
    let picker = FieldPicker::new(dms_fields.iter().chain(router.map_or(&[][..], Router::fields)));
    let mut picked = Picked::default();
    for (i, &payload) in payloads.iter().enumerate() {
        picker.pick(payload, &mut picked);
        if !dms_fields.is_empty() && out.skipped.count(&dms::classify(&picked)) {
            continue;
        }
        let idx = match router.map(|r| r.place(&picked.values()[dms_fields.len()..], &mut scratch)) {
            None => home,
            Some(Placement::Route(idx)) => idx,
            Some(Placement::New(table)) => {
                out.new_tables.insert(table);
                continue;
            }
            Some(Placement::Nowhere(reason)) => {
                unrouted.push(json_arrow::Reject { index: i, reason });
                continue;
            }
        };
        let run = match &mut runs[idx] {
            Some(run) => run,
            empty => empty.insert(routes[idx].decoder.run()?),
        };
        run.push(i as u32, payload)?;
    }
    for (idx, run) in runs.into_iter().enumerate() {
        if let Some(run) = run {
            out.parts.push((idx, run.finish(payloads)?));
        }
    }
    if !unrouted.is_empty() {
        // The reasons are dead-lettered with the source's own table.
        let batch = RecordBatch::new_empty(routes[home].decoder.table_schema().clone());
        out.parts.push((home, json_arrow::Decoded { batch, rows: Vec::new(), rejects: unrouted }));
    }
    Ok(out)
}
