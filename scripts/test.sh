#!/usr/bin/env bash
# Every test: unit tests and end-to-end tests against a real tansu broker and moto S3 server,
# then the deployment checks (Terraform, Dockerfile, Airflow DAG).
# Builds tests and binaries in one profile (release), reusing $CARGO_TARGET_DIR when present.
source "$(dirname "$0")/lib.sh"
cd "$REPO"
bash scripts/setup.sh
log "building binaries and tests (release profile, target dir $CARGO_TARGET_DIR)"
log "checking formatting and lints"
cargo fmt --all --check
cargo clippy --release --workspace --all-targets --locked -- -D warnings
python3 scripts/module_cycles.py crates
cargo build --release --workspace --bins --tests
link_jobs
trap 'bash scripts/services.sh stop' EXIT
source "$(bash scripts/services.sh start | tail -1)"
log "running tests"
# --no-fail-fast: one failing test binary must not hide the others.
status=0
cargo test --release --workspace --no-fail-fast -- --test-threads "${TEST_THREADS:-2}" "$@" || status=$?
# Terraform, Dockerfile and Airflow DAG checks (they call the binaries built above).
bash scripts/deploy_checks.sh || status=$?
exit $status
