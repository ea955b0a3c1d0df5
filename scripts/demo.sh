#!/usr/bin/env bash
# The main job end to end on the embedded default: local broker, local Delta tables in ./lake.
# Installs and starts what it needs; the broker is stopped at the end (its data is in memory).
source "$(dirname "$0")/lib.sh"
cd "$REPO"
bash scripts/setup.sh
log "building (release; the first build takes about half an hour on 2 cores)"
cargo build --release --workspace --bins
link_jobs
trap 'bash scripts/services.sh stop' EXIT
source "$(bash scripts/services.sh start | tail -1)"
# The broker starts empty (it keeps messages in memory): a previous run's ./lake records offsets
# of a broker that no longer exists, so the demo starts from empty tables too.
rm -rf lake
log "creating topics and producing the reference data (1% malformed)"
"$BIN/lakectl" create-topics orders members --partitions 3
"$BIN/lakectl" produce --orders 10000 --members 300 --bad-fraction 0.01
log "raw-append, trigger once, into ./lake"
rc=0; "$BIN/raw-append" --config schemas/pipeline.toml || rc=$?
[ "$rc" -eq 0 ] || { echo "raw-append exited $rc" >&2; exit "$rc"; }
log "what it wrote"
for t in lake/raw/order lake/raw/member lake/raw/dead_letter; do
  printf '%-22s %4d data files, %3d commits, partitions e.g. %s\n' "$t" \
    "$(find "$t" -name '*.parquet' | wc -l)" "$(ls "$t/_delta_log" | grep -c '\.json$')" \
    "$(find "$t" -name '*.parquet' | head -1 | sed "s|^$t/||; s|/[^/]*$||")"
done
log "a second run finds nothing new (exit code 3)"
rc=0; "$BIN/raw-append" --config schemas/pipeline.toml >/dev/null || rc=$?
echo "second run exit code: $rc"
log "stream-join, trigger once: raw/order x raw/member -> ./lake/curated"
rc=0; "$BIN/stream-join" --config schemas/pipeline.toml | tail -1 || rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || { echo "stream-join exited $rc" >&2; exit "$rc"; }
log "merge-upsert, trigger once: curated -> ./lake/processed, one row per order_id (the latest)"
rc=0; "$BIN/merge-upsert" --config schemas/pipeline.toml | tail -1 || rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || { echo "merge-upsert exited $rc" >&2; exit "$rc"; }
log "maintenance: compact raw/order and processed, checkpoint, symlink manifests and the Athena DDL of processed"
"$BIN/maintenance" compact raw_order | tail -1
"$BIN/maintenance" compact processed | tail -1
"$BIN/maintenance" checkpoint processed | tail -1
"$BIN/maintenance" manifest processed | tail -1
"$BIN/maintenance" catalog processed --database lakehouse | sed '$d'
