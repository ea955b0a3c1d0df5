//! A slice's decoding on a blocking worker: messages are selected per route (DMS control records
//! skipped, routed messages split by table), decoded into table rows, and scanned for new fields.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use json_arrow::SchemaInference;
use kafka_source::RawBatch;
use pipeline_config::SourceFormat;

use crate::dms;
use crate::router::Router;
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
        let started = Instant::now();
        let mut rows = Vec::with_capacity(slice.chunks.len());
        let mut skipped = Vec::with_capacity(slice.chunks.len());
        let mut discovered: BTreeMap<usize, SchemaInference> = BTreeMap::new();
        let mut new_tables = BTreeSet::new();
        for (key, chunk) in &slice.chunks {
            let home = by_topic[key.topic.as_ref()];
            let payloads = chunk.payloads();
            let (groups, skips, new) = select((home, &routes[home]), routers.get(key.topic.as_ref()), &payloads);
            new_tables.extend(new.into_iter().map(|name| (key.topic.to_string(), name)));
            let mut parts = Vec::with_capacity(groups.len());
            for (idx, group) in groups {
                let route = &routes[idx];
                let decoded = match group {
                    Group::All => route.decoder.decode(&payloads)?,
                    Group::Some(kept) => {
                        let messages: Vec<&[u8]> = kept.iter().map(|&i| payloads[i as usize]).collect();
                        dms::restore(route.decoder.decode(&messages)?, &kept)
                    }
                    Group::Unrouted(rejects) => json_arrow::Decoded {
                        batch: RecordBatch::new_empty(route.decoder.table_schema().clone()),
                        rows: Vec::new(),
                        rejects,
                    },
                };
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

/// Messages of a chunk bound for one route.
enum Group {
    /// Every message (a plain source: no copy of the payload list).
    All,
    /// These (chunk indexes).
    Some(Vec<u32>),
    /// None: the messages a router could not place, rejected with their reasons.
    Unrouted(Vec<json_arrow::Reject>),
}

/// Which messages of a chunk go to which route: DMS control records are skipped, a routed
/// source's messages are split by table.
fn select((home_idx, home): (usize, &Route), router: Option<&Router>, payloads: &[&[u8]]) -> Selection {
    let (kept, skipped) = match home.format {
        SourceFormat::Json if router.is_none() => return (vec![(home_idx, Group::All)], dms::Skipped::default(), BTreeSet::new()),
        SourceFormat::Json => ((0..payloads.len() as u32).collect(), dms::Skipped::default()),
        SourceFormat::Dms => {
            let selection = dms::select(payloads);
            (selection.kept, selection.skipped)
        }
    };
    let Some(router) = router else { return (vec![(home_idx, Group::Some(kept))], skipped, BTreeSet::new()) };
    let split = router.split(payloads, &kept);
    let mut groups: Vec<(usize, Group)> = split.groups.into_iter().map(|(idx, kept)| (idx, Group::Some(kept))).collect();
    if !split.unrouted.is_empty() {
        groups.push((home_idx, Group::Unrouted(split.unrouted)));
    }
    (groups, skipped, split.new_tables)
}

/// A chunk's messages by route, the DMS records skipped, and the inferred tables its
/// messages need that have no route yet.
type Selection = (Vec<(usize, Group)>, dms::Skipped, BTreeSet<String>);
