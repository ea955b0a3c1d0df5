//! A slice's decoding on a blocking worker: messages are selected per route (DMS control records
//! skipped, routed messages split by table), decoded into table rows, and scanned for new fields.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use json_arrow::{DecodeRun, FieldPicker, Picked, SchemaInference};
use kafka_source::{PartitionChunk, PartitionKey, RawBatch};
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
/// async workers). The chunks of one topic (its partitions) are decoded together, one
/// decoding per table, and their rows split by chunk afterwards: a routed table's share of a
/// partition is small, and each decoding has a fixed cost.
pub(super) fn spawn_decode(sinks: &Sinks, slice: RawBatch, ingested_at: DateTime<Utc>) -> Decoding {
    let (routes, by_topic, routers) = (sinks.routes.clone(), sinks.by_topic.clone(), sinks.routers.clone());
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let chunks: Vec<(&PartitionKey, &PartitionChunk)> = slice.chunks.iter().collect();
        let mut rows = Vec::with_capacity(chunks.len());
        let mut skipped = Vec::with_capacity(chunks.len());
        let mut discovered: BTreeMap<usize, SchemaInference> = BTreeMap::new();
        let mut new_tables = BTreeSet::new();
        // The slice's chunks are in key order: each topic's are consecutive.
        for topic in chunks.chunk_by(|a, b| a.0.topic == b.0.topic) {
            let name = topic[0].0.topic.as_ref();
            let bases: Vec<usize> = topic.iter().scan(0, |at, (_, c)| Some(std::mem::replace(at, *at + c.len()))).collect();
            let payloads: Vec<&[u8]> = topic.iter().flat_map(|(_, c)| (0..c.len()).map(|i| c.payload(i))).collect();
            let decoded = decode_topic(by_topic[name], &routes, routers.get(name), &payloads, &bases)?;
            new_tables.extend(decoded.new_tables.into_iter().map(|table| (name.to_string(), table)));
            skipped.extend(decoded.skipped);
            let mut per_chunk: Vec<Vec<(usize, ChunkRows)>> = topic.iter().map(|_| Vec::new()).collect();
            for (idx, decoded) in decoded.parts {
                let route = &routes[idx];
                for (j, part) in split_by_chunk(decoded, &bases)?.into_iter().enumerate() {
                    if part.rows.is_empty() && part.rejects.is_empty() {
                        continue;
                    }
                    let (key, chunk) = topic[j];
                    let built = table_rows::build(route, key, chunk, part, ingested_at)?;
                    if let Some(fields) = &route.evolution {
                        let inference = discovered.entry(idx).or_insert_with(|| SchemaInference::for_flatten(route.flatten()));
                        built.messages.iter().for_each(|&m| fields.observe(chunk.payload(m as usize), inference));
                    }
                    per_chunk[j].push((idx, built));
                }
            }
            rows.extend(per_chunk);
        }
        let discovered = discovered.into_iter().filter(|(_, found)| !found.is_empty()).collect();
        Ok(DecodedSlice { slice, routes, discovered, new_tables, rows, skipped, took: started.elapsed() })
    })
}

/// Splits what was decoded from several chunks' messages (`bases[j]`: where chunk `j`'s
/// messages start) into one [`json_arrow::Decoded`] per chunk, indexes its own. Rows and
/// rejects are in input order, so each chunk's are a contiguous run (its rows a zero-copy
/// slice of the batch).
fn split_by_chunk(decoded: json_arrow::Decoded, bases: &[usize]) -> Result<Vec<json_arrow::Decoded>, RawAppendError> {
    let json_arrow::Decoded { batch, rows, rejects } = decoded;
    if !rows.is_sorted() || !rejects.is_sorted_by_key(|r| r.index) {
        // A row split off to the wrong chunk would get another partition's offset.
        return Err(RawAppendError::Internal("decoded rows are not in input order".into()));
    }
    let mut rejects = rejects.into_iter().peekable();
    let mut row_at = 0;
    let mut out = Vec::with_capacity(bases.len());
    for (j, &base) in bases.iter().enumerate() {
        let end = bases.get(j + 1).copied().unwrap_or(usize::MAX);
        let row_end = row_at + rows[row_at..].partition_point(|&r| (r as usize) < end);
        let own: Vec<u32> = rows[row_at..row_end].iter().map(|&r| r - base as u32).collect();
        let mut own_rejects = Vec::new();
        while let Some(reject) = rejects.next_if(|r| r.index < end) {
            own_rejects.push(json_arrow::Reject { index: reject.index - base, reason: reject.reason });
        }
        out.push(json_arrow::Decoded { batch: batch.slice(row_at, row_end - row_at), rows: own, rejects: own_rejects });
        row_at = row_end;
    }
    Ok(out)
}

/// A topic's chunks decoded: the rows of each route they feed (indexes into all their
/// messages), the DMS records skipped per chunk, and the inferred tables their messages need
/// that have no route yet.
struct TopicDecoded {
    parts: Vec<(usize, json_arrow::Decoded)>,
    skipped: Vec<dms::Skipped>,
    new_tables: BTreeSet<String>,
}

/// Decodes the messages of the source whose table is route `home` (chunk `j`'s start at
/// `bases[j]`): DMS control records are skipped, a routed source's messages are placed by
/// table, each message classified, placed and fed to its table's decoder in one go while its
/// bytes are in cache.
fn decode_topic(
    home: usize,
    routes: &[Arc<Route>],
    router: Option<&Router>,
    payloads: &[&[u8]],
    bases: &[usize],
) -> Result<TopicDecoded, RawAppendError> {
    let mut out = TopicDecoded { parts: Vec::new(), skipped: vec![dms::Skipped::default(); bases.len()], new_tables: BTreeSet::new() };
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
        if !dms_fields.is_empty() && out.skipped[bases.partition_point(|&b| b <= i) - 1].count(&dms::classify(&picked)) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array};
    use json_arrow::{Decoded, Reject};

    #[test]
    fn rows_and_rejects_of_several_chunks_go_back_to_their_chunk_with_its_indexes() {
        let column = Int64Array::from(vec![10, 11, 30, 31, 32]);
        let batch = RecordBatch::try_from_iter([("v", Arc::new(column) as arrow::array::ArrayRef)]).unwrap();
        let reject = |index: usize| Reject { index, reason: format!("r{index}") };
        // Chunks of 3, 0, 2 and 4 messages: 0..3, 3..3, 3..5, 5..9.
        let decoded = Decoded { batch, rows: vec![0, 1, 5, 6, 8], rejects: vec![reject(2), reject(3), reject(4), reject(7)] };
        let parts = split_by_chunk(decoded, &[0, 3, 3, 5]).unwrap();
        let rows: Vec<Vec<u32>> = parts.iter().map(|p| p.rows.clone()).collect();
        assert_eq!(rows, [vec![0, 1], vec![], vec![], vec![0, 1, 3]]);
        let rejects: Vec<Vec<(usize, &str)>> =
            parts.iter().map(|p| p.rejects.iter().map(|r| (r.index, r.reason.as_str())).collect()).collect();
        assert_eq!(rejects, [vec![(2, "r2")], vec![], vec![(0, "r3"), (1, "r4")], vec![(2, "r7")]]);
        let values = |p: &Decoded| p.batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec();
        assert_eq!(parts.iter().map(values).collect::<Vec<_>>(), [vec![10, 11], vec![], vec![], vec![30, 31, 32]]);
        let unordered = Decoded { batch: parts[3].batch.clone(), rows: vec![2, 1, 0], rejects: Vec::new() };
        assert!(split_by_chunk(unordered, &[0]).is_err(), "rows out of input order are refused, never split wrongly");
    }
}
