#!/usr/bin/env bash
# Deployment checks: Terraform wiring (python-hcl2), terraform fmt, checkov on Terraform and the
# Dockerfile, the runtime image's libraries against the built binaries, and the Airflow DAG
# loaded by real Airflow. Needs the release binaries (scripts/test.sh builds them first).
source "$(dirname "$0")/lib.sh"
cd "$REPO"
bash scripts/setup.sh --deploy
status=0
log "checking Terraform and the Dockerfile"
(cd tests/deploy && "$DEPLOY_VENV/bin/python" -m pytest -q -p no:cacheprovider test_terraform.py "$@") || status=$?
log "loading the Airflow DAG"
airflow_home="$(mktemp -d)"
(cd tests/deploy && AIRFLOW_HOME="$airflow_home" AIRFLOW__CORE__LOAD_EXAMPLES=False \
  "$AIRFLOW_VENV/bin/python" -m pytest -q -p no:cacheprovider test_dag.py "$@") || status=$?
rm -rf "$airflow_home"
exit $status
