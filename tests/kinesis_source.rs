//! kinesis-source against moto's Kinesis (the moto server the S3 tests use): every record read
//! once, KPL aggregates expanded, restarts from recorded positions (also inside an aggregate),
//! and a split and a merge read parents before children with each key's records in order.
//!
//! moto differs from AWS in ways that shape these tests: a split *moves* the parent's records
//! into the children (re-put with new sequence numbers) and a merge *copies* both parents'
//! records into the child, so a child also serves its parents' records (on AWS a child holds
//! only what was put after the reshard) — reshards here happen before reading, and after a merge
//! the parents' records come once more from the child; and moto never ends a closed shard's
//! iterator, which the reader handles as AWS's end (an empty answer at the tip of a closed
//! shard). The parent-before-child order itself is unit-tested over the shard graph.

use std::collections::BTreeMap;

use e2e_tests::*;
use kinesis_source::kpl::{aggregate, UserRecord};
use kinesis_source::{readable, KinesisReader, KinesisRecord, ShardCursor, ShardPosition, ShardState, StartAt};

fn numbered(prefix: &str, keys: usize, count: usize) -> Vec<(String, Vec<u8>)> {
    (0..count).map(|i| (format!("k{}", i % keys), format!("{prefix}-{i}").into_bytes())).collect()
}

/// What a run keeps between restarts: each shard's last position and state.
#[derive(Default)]
struct Progress {
    positions: BTreeMap<String, ShardPosition>,
    states: BTreeMap<String, ShardState>,
    /// ("read", shard) when a shard first yields records, ("finished", shard) when it ends.
    events: Vec<(&'static str, String)>,
}

impl Progress {
    fn first(&self, event: &str, shard: &str) -> Option<usize> {
        self.events.iter().position(|(e, s)| *e == event && s == shard)
    }
}

/// Reads every readable shard to its tip, in graph order, until no shard finishes any more;
/// each record with its shard.
async fn read_all(reader: &mut KinesisReader, progress: &mut Progress) -> Vec<(String, KinesisRecord)> {
    let mut out = Vec::new();
    loop {
        let shards = reader.list_shards().await.expect("shards listed");
        let mut finished_one = false;
        for id in readable(&shards, &progress.states) {
            let info = shards.iter().find(|s| s.id == id).unwrap();
            let start = progress.positions.get(&id).map(|p| StartAt::After(p.clone())).unwrap_or(StartAt::TrimHorizon);
            let mut cursor = ShardCursor::new(info, start);
            loop {
                let records = reader.read(&mut cursor, 25).await.expect("records read");
                let n = records.len();
                if n > 0 && progress.first("read", &id).is_none() {
                    progress.events.push(("read", id.clone()));
                }
                out.extend(records.into_iter().map(|r| (id.clone(), r)));
                if cursor.caught_up(n) {
                    break;
                }
            }
            if let Some(p) = &cursor.position {
                progress.positions.insert(id.clone(), p.clone());
            }
            if !cursor.finished {
                progress.states.entry(id).or_insert(ShardState::Started);
            } else if progress.states.insert(id.clone(), ShardState::Finished) != Some(ShardState::Finished) {
                progress.events.push(("finished", id));
                finished_one = true;
            }
        }
        if !finished_one {
            return out;
        }
    }
}

fn payloads(records: &[(String, KinesisRecord)]) -> Vec<String> {
    let mut all: Vec<String> = records.iter().map(|(_, r)| String::from_utf8(r.data.clone()).unwrap()).collect();
    all.sort();
    all
}

fn expected(batches: &[&[(String, Vec<u8>)]]) -> Vec<String> {
    let mut all: Vec<String> = batches.iter().flat_map(|b| b.iter().map(|(_, d)| String::from_utf8(d.clone()).unwrap())).collect();
    all.sort();
    all
}

#[test]
fn every_record_once_with_aggregates_expanded_and_restarts_from_positions() {
    let services = Services::get();
    block_on(async {
        let config = services.aws_config(&services.s3_endpoint).await;
        let client = aws_sdk_kinesis::Client::new(&config);
        let stream = unique("orders");
        create_stream(&client, &stream, 2).await;
        let first = numbered("a", 6, 60);
        put(&client, &stream, &first).await;
        let users: Vec<UserRecord> =
            (0..10).map(|i| UserRecord { partition_key: "agg".into(), data: format!("agg-{i}").into_bytes() }).collect();
        let kpl = vec![("agg".to_string(), aggregate(&users))];
        put(&client, &stream, &kpl).await;

        let mut progress = Progress::default();
        let read = read_all(&mut KinesisReader::new(&config, &stream), &mut progress).await;
        let aggregated: Vec<(String, Vec<u8>)> = users.iter().map(|u| (u.partition_key.clone(), u.data.clone())).collect();
        assert_eq!(payloads(&read), expected(&[&first, &aggregated]), "each record once, the aggregate as its 10 user records");
        for (shard, position) in &progress.positions {
            let counters: Vec<i64> = read.iter().filter(|(s, _)| s == shard).map(|(_, r)| r.counter).collect();
            assert_eq!(counters, (0..=position.counter).collect::<Vec<_>>(), "{shard}: user records numbered from 0");
        }

        // A restart from the recorded positions reads only what came after.
        let second = numbered("b", 6, 40);
        put(&client, &stream, &second).await;
        let read = read_all(&mut KinesisReader::new(&config, &stream), &mut progress).await;
        assert_eq!(payloads(&read), expected(&[&second]), "nothing read twice after a restart");

        // A restart recorded inside the aggregate (its fifth user record) resumes at the sixth.
        let agg = read_all(&mut KinesisReader::new(&config, &stream), &mut Progress::default()).await;
        let (shard, fifth) = agg.iter().find(|(_, r)| r.data == b"agg-4").expect("aggregate read").clone();
        assert_eq!(fifth.sub_sequence, 4);
        let inside = ShardPosition { counter: fifth.counter, sequence: fifth.sequence.clone(), sub_sequence: 4, finished: false };
        let mut resumed = Progress::default();
        resumed.positions.insert(shard.clone(), inside);
        resumed.states.insert(shard.clone(), ShardState::Started);
        let rest = read_all(&mut KinesisReader::new(&config, &stream), &mut resumed).await;
        let rest_of_aggregate: Vec<&KinesisRecord> =
            rest.iter().filter(|(s, r)| *s == shard && r.sequence == fifth.sequence).map(|(_, r)| r).collect();
        assert_eq!(
            rest_of_aggregate.iter().map(|r| (r.sub_sequence, r.counter)).collect::<Vec<_>>(),
            (5..10).map(|i| (i, fifth.counter + i as i64 - 4)).collect::<Vec<_>>(),
            "user records 5..9, counters continuing"
        );
        // ...and then the rest of that shard, as the uninterrupted read numbered it.
        let on_shard = |records: &[(String, KinesisRecord)]| -> Vec<(Vec<u8>, i64)> {
            records.iter().filter(|(s, r)| *s == shard && r.counter > fifth.counter).map(|(_, r)| (r.data.clone(), r.counter)).collect()
        };
        assert_eq!(on_shard(&rest), on_shard(&agg), "nothing repeated, nothing lost after the position");
        assert!(!rest.iter().any(|(s, r)| *s == shard && r.counter <= fifth.counter));
    });
}

#[test]
fn a_split_and_a_merge_are_read_parents_first_with_each_keys_records_in_order() {
    let services = Services::get();
    block_on(async {
        let config = services.aws_config(&services.s3_endpoint).await;
        let client = aws_sdk_kinesis::Client::new(&config);
        let stream = unique("reshard");
        create_stream(&client, &stream, 2).await;
        let before = numbered("c", 8, 40);
        put(&client, &stream, &before).await;
        // Shard 0 covers [0, 2^127); split it at 2^126, then merge its upper half with shard 1.
        let split_at = (1u128 << 126).to_string();
        client
            .split_shard()
            .stream_name(&stream)
            .shard_to_split("shardId-000000000000")
            .new_starting_hash_key(split_at)
            .send()
            .await
            .unwrap();
        let middle = numbered("d", 8, 40);
        put(&client, &stream, &middle).await;
        client
            .merge_shards()
            .stream_name(&stream)
            .shard_to_merge("shardId-000000000003")
            .adjacent_shard_to_merge("shardId-000000000001")
            .send()
            .await
            .unwrap();
        // Nothing is put after the merge: moto routes such records to the closed parents.

        let mut progress = Progress::default();
        let read = read_all(&mut KinesisReader::new(&config, &stream), &mut progress).await;
        // moto's merge child serves its parents' records again (see the module doc): the
        // copies are exactly the merged parents' records.
        let (parents, rest): (Vec<_>, Vec<_>) = read.iter().partition(|(s, _)| s == "shardId-000000000001" || s == "shardId-000000000003");
        let copies: Vec<(String, KinesisRecord)> = rest
            .iter()
            .filter(|(s, r)| s == "shardId-000000000004" && !r.data.starts_with(b"e-"))
            .map(|(s, r)| (s.clone(), r.clone()))
            .collect();
        assert_eq!(payloads(&copies), payloads(&parents.iter().map(|(s, r)| (s.clone(), r.clone())).collect::<Vec<_>>()));
        let once: Vec<(String, KinesisRecord)> = read.iter().filter(|(s, _)| s != "shardId-000000000004").cloned().collect();
        assert_eq!(payloads(&once), expected(&[&before, &middle]), "every record once");
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (_, r) in &once {
            by_key.entry(r.partition_key.clone()).or_default().push(String::from_utf8(r.data.clone()).unwrap());
        }
        for (key, seen) in by_key {
            let put_order: Vec<String> = [&before, &middle]
                .iter()
                .flat_map(|b| b.iter().filter(|(k, _)| *k == key).map(|(_, d)| String::from_utf8(d.clone()).unwrap()))
                .collect();
            assert_eq!(seen, put_order, "{key}: in the order put");
        }
        let finished: Vec<&String> = progress.states.iter().filter(|(_, s)| **s == ShardState::Finished).map(|(id, _)| id).collect();
        assert_eq!(finished, ["shardId-000000000000", "shardId-000000000001", "shardId-000000000003"], "closed shards finished");
        // No child yields a record before each of its parents finished.
        for (child, parents) in [
            ("shardId-000000000002", vec!["shardId-000000000000"]),
            ("shardId-000000000003", vec!["shardId-000000000000"]),
            ("shardId-000000000004", vec!["shardId-000000000001", "shardId-000000000003"]),
        ] {
            // A split child may get none of the eight keys; the merge child always has records.
            let Some(read_at) = progress.first("read", child) else {
                assert_ne!(child, "shardId-000000000004", "{:?}", progress.events);
                continue;
            };
            for parent in parents {
                assert!(progress.first("finished", parent) < Some(read_at), "{child} read before {parent} finished: {:?}", progress.events);
            }
        }
    });
}

#[test]
fn throttled_reads_back_off_are_counted_and_lose_nothing() {
    let services = Services::get();
    let proxy = FaultProxy::kinesis_throttling(&services, 0.5, 7);
    block_on(async {
        let config = services.aws_config(&services.s3_endpoint).await;
        let client = aws_sdk_kinesis::Client::new(&config);
        let stream = unique("throttled");
        create_stream(&client, &stream, 2).await;
        let records = numbered("t", 5, 50);
        put(&client, &stream, &records).await;
        let mut reader = KinesisReader::new(&services.aws_config(&proxy.endpoint).await, &stream);
        let read = read_all(&mut reader, &mut Progress::default()).await;
        assert_eq!(payloads(&read), expected(&[&records]), "every record once despite the throttling");
        let injected = proxy.counts(None)["throttle"].as_u64().unwrap();
        assert!(injected > 0, "half the GetRecords calls are throttled");
        assert_eq!(reader.stats.throttles, injected, "each throttled call counted once");
    });
}
