"""Terraform wiring, formatting and checkov; the Dockerfile against the built binaries."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli import assert_cli_accepts as _assert_cli_accepts, binary as _binary
from tf_model import REPO, TERRAFORM, attr, blocks, job_binaries, module, pipeline, resource, table_path

JOBS = module()["locals"]["jobs"]


def test_every_job_binary_has_a_job_entry():
    assert set(JOBS) == job_binaries()


@pytest.mark.parametrize(
    "type_,name",
    [
        ("aws_ecs_task_definition", "jobs"),
        ("aws_iam_role", "job"),
        ("aws_iam_role_policy", "job"),
        ("aws_cloudwatch_log_group", "jobs"),
    ],
)
def test_every_job_has_a_task_definition_role_and_log_group(type_, name):
    # One per job: the resource iterates the jobs map itself.
    assert attr(resource(type_, name), "for_each") == "${local.jobs}"


def test_task_definition_wiring():
    td = resource("aws_ecs_task_definition", "jobs")
    assert attr(td, "task_role_arn") == "${aws_iam_role.job[each.key].arn}"
    assert attr(td, "execution_role_arn") == "${aws_iam_role.execution.arn}"
    assert attr(td, "container_definitions").startswith("${jsonencode([\"${merge(local.container_common[each.key],{'command': '${each.value.command}'")
    common = module()["locals"]["container_common"]
    assert common.startswith("${{for job in keys(local.jobs) : job => {'name': 'job'"), "the DAG overrides the container named 'job'"
    assert "'awslogs-group': '${aws_cloudwatch_log_group.jobs[job].name}'" in common
    assert "'awslogs-stream-prefix': '${job}'" in common
    assert "'stopTimeout': 120" in common
    assert "'readonlyRootFilesystem': True" in common and "'user': '10001:10001'" in common


def test_continuous_service_has_health_check_and_stop_timeout():
    # python-hcl2 escapes the quotes of a nested interpolation.
    td = attr(resource("aws_ecs_task_definition", "raw_append_service"), "container_definitions").replace("\\'", "'")
    assert td.startswith("${jsonencode(['${merge(local.container_common[\"raw-append\"]")
    assert "'command': ['raw-append', '--trigger', 'continuous']" in td
    assert "'healthCheck': {'command': ['CMD', '/usr/local/bin/lakectl', 'healthcheck', '--max-age', '5m']" in td
    assert "LAKEHOUSE_RAW_APPEND_GROUP_ID" in td and "LAKEHOUSE_METRICS_ADDR" in td
    # One service of one task per index: each knows its share of the Kinesis shards.
    assert "'name': 'LAKEHOUSE_KINESIS_SHARD_INDEX', 'value': '${tostring(count.index)}'" in td, td
    assert "'name': 'LAKEHOUSE_KINESIS_SHARD_COUNT', 'value': '${tostring(var.raw_append_desired_count)}'" in td, td
    service = resource("aws_ecs_service", "raw_append")
    assert attr(service, "task_definition") == "${aws_ecs_task_definition.raw_append_service[count.index].arn}"
    assert attr(service, "desired_count") == 1


def test_scheduled_commands_use_existing_flags():
    for job, spec in JOBS.items():
        command = spec["command"]
        assert command[0] == job
        _assert_cli_accepts(command)


def test_table_paths_match_the_pipeline_configuration():
    paths = module()["locals"]["table_paths"]
    config = pipeline()
    for name, table in config["tables"].items():
        assert paths.get(name) == table["path"], name
    assert config["raw_append"]["dead_letter_table"] in paths.values()
    assert config["merge_upsert"]["dead_letter_table"] in paths.values()
    assert config["merge_upsert"]["tombstone_table"] in paths.values()


def test_job_prefixes_match_what_each_job_touches():
    config = pipeline()
    ra, sj, mu = config["raw_append"], config["stream_join"], config["merge_upsert"]
    assert set(JOBS["raw-append"]["writes"]) == {table_path(s["table"]) for s in ra["sources"]} | {ra["dead_letter_table"]}
    assert JOBS["raw-append"]["kafka"] is True
    assert set(JOBS["stream-join"]["reads"]) == {table_path(sj["left"]["table"]), table_path(sj["right"]["table"])}
    writes = {table_path(sj["output"]), sj["checkpoint"]} | ({table_path(sj["late_table"])} if "late_table" in sj else set())
    assert set(JOBS["stream-join"]["writes"]) == writes
    assert set(JOBS["merge-upsert"]["reads"]) == {table_path(mu["source"])}
    assert set(JOBS["merge-upsert"]["writes"]) == {table_path(mu["target"]), mu["dead_letter_table"], mu["tombstone_table"], mu["checkpoint"]}
    assert not any(JOBS[j]["kafka"] for j in ("stream-join", "merge-upsert", "maintenance"))
    # Default topics are the ones raw-append reads.
    assert attr(module()["variable"]["kafka_topics"], "default") == [s["topic"] for s in ra["sources"]]
    for name in attr(module()["variable"]["maintained_tables"], "default") + attr(module()["variable"]["athena_tables"], "default"):
        assert name in config["tables"], name


def test_job_policies_are_scoped_to_prefixes_and_topics():
    doc = module()["data"]["aws_iam_policy_document"]["job"]
    statements = {attr(s, "sid"): s for s in blocks(doc, "statement")}
    write = statements["WriteOwnTables"]
    assert attr(write, "resources") == '${[for p in each.value.writes : "${module.lake_bucket.arn}/${local.lake_key_prefix}${p}/*"]}'
    listing = statements["ListOwnPrefixes"]
    assert attr(blocks(listing, "condition")[0], "variable") == "s3:prefix"
    dynamic = {attr(d["statement"]["content"][0], "sid"): d["statement"] for d in blocks(doc, "dynamic")}
    assert attr(dynamic["KafkaReadTopics"]["content"][0], "resources") == "${local.msk_topic_arns}"
    assert attr(dynamic["KafkaConsumerGroup"]["content"][0], "resources") == ["${local.msk_group_arn}"]
    for sid in ("KafkaConnect", "KafkaReadTopics", "KafkaConsumerGroup"):
        assert attr(dynamic[sid], "for_each") == "${each.value.kafka ? [1] : []}"
    # Only raw-append reads Kinesis, and only the configured streams.
    kinesis = dynamic["KinesisRead"]
    assert attr(kinesis, "for_each") == "${each.value.kinesis && length(var.kinesis_streams) > 0 ? [1] : []}"
    assert attr(kinesis["content"][0], "resources") == "${local.kinesis_stream_arns}"
    assert set(attr(kinesis["content"][0], "actions")) == {f"kinesis:{a}" for a in ("GetRecords", "GetShardIterator", "ListShards", "DescribeStreamSummary")}
    assert [j for j in JOBS if JOBS[j]["kinesis"]] == ["raw-append"]
    # Only maintenance keeps the Glue catalog, with exactly the calls `catalog --apply` makes.
    assert attr(dynamic["GlueCatalog"], "for_each") == "${each.value.glue ? [1] : []}"
    assert [j for j in JOBS if JOBS[j]["glue"]] == ["maintenance"]
    glue_actions = set(attr(dynamic["GlueCatalog"]["content"][0], "actions"))
    assert glue_actions == {f"glue:{a}" for a in ("GetDatabase", "GetTable", "GetPartitions", "CreateTable", "UpdateTable", "BatchCreatePartition", "BatchUpdatePartition", "BatchDeletePartition")}
    # No job policy grants a wildcard action or resource.
    text = (TERRAFORM / "iam.tf").read_text()
    job_doc = text[text.index('data "aws_iam_policy_document" "job"') :]
    assert '"s3:*"' not in job_doc and 'resources = ["*"]' not in job_doc


def test_lake_bucket_lifecycle_never_expires_live_files():
    lifecycle = resource("aws_s3_bucket_lifecycle_configuration", "lake")
    rules = blocks(lifecycle, "rule")
    aborts = [r for r in rules if blocks(r, "abort_incomplete_multipart_upload")]
    assert aborts and attr(blocks(aborts[0], "abort_incomplete_multipart_upload")[0], "days_after_initiation") == 1
    for rule in rules:
        for expiration in blocks(rule, "expiration"):
            # Only delete markers with no versions left: never a live object.
            assert set(k for k in expiration if not k.startswith("__")) == {"expired_object_delete_marker"}, rule


def test_dag_is_shipped_with_its_settings():
    dag = resource("aws_s3_object", "dag")
    assert attr(dag, "source").endswith("/../airflow/dags/lakehouse_pipeline.py")
    assert (REPO / "airflow" / "dags" / "lakehouse_pipeline.py").exists()
    assert attr(resource("aws_s3_object", "dag_settings"), "key") == "dags/lakehouse_pipeline.json"
    settings = module()["locals"]["dag_settings"]
    assert set(settings) == set(_sample_settings_keys())


def test_variables_and_outputs_are_documented():
    for kind in ("variable", "output"):
        for name, body in module()[kind].items():
            assert attr(body, "description"), f"{kind} {name} has no description"
    for folder in [*(TERRAFORM / "examples").iterdir(), *(TERRAFORM / "modules").iterdir()]:
        inner = module(folder)
        assert inner["variable"], folder
        for kind in ("variable", "output"):
            for name, body in inner[kind].items():
                assert attr(body, "description"), f"{folder.name}: {kind} {name} has no description"


def test_terraform_is_formatted():
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed on this machine (fmt needs no providers, but the binary)")
    result = subprocess.run([terraform, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("target,framework", [("terraform", "terraform"), ("Dockerfile", "dockerfile")])
def test_checkov_is_clean(target, framework):
    # The venv running these tests has checkov (scripts/setup.sh --deploy).
    checkov = Path(sys.executable).with_name("checkov")
    path_args = ["-d", str(REPO / target)] if framework == "terraform" else ["-f", str(REPO / target)]
    result = subprocess.run(
        [str(checkov), *path_args, "--framework", framework, "--quiet", "--compact", "--skip-download", "--output", "cli"],
        capture_output=True,
        text=True,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"Failed checks: 0\b", result.stdout) or "Passed checks" in result.stdout


# --- Dockerfile ------------------------------------------------------------------------------

DOCKERFILE = (REPO / "Dockerfile").read_text()


def test_dockerfile_is_multi_stage_non_root_with_exec_form_health_check():
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\w+)", DOCKERFILE, re.M)
    assert stages == ["build", "runtime"]
    assert re.search(r"^USER\s+10001", DOCKERFILE, re.M)
    health = re.search(r"^HEALTHCHECK [^\[]*?CMD (\[[^\]]*\])", DOCKERFILE, re.M)
    assert health, "HEALTHCHECK must use the exec form"
    command = json.loads(health.group(1))
    assert command[:2] == ["/usr/local/bin/lakectl", "healthcheck"]
    _assert_cli_accepts(["lakectl", *command[1:]])


def test_dockerfile_ships_every_job_binary():
    assert "cargo build --release --locked --bin lakehouse" in DOCKERFILE
    assert "cp target/release/lakehouse /out/" in DOCKERFILE
    links = re.search(r"for job in ([^;]+); do ln -s lakehouse", DOCKERFILE).group(1).split()
    assert set(links) == job_binaries() | {"lakectl"}, links


def test_runtime_image_has_every_shared_library_the_binaries_link():
    """`ldd` of the built binaries, each library's Debian package, against the runtime stage's
    apt-get list (the build here is on the same Debian release as the image)."""
    runtime = DOCKERFILE[DOCKERFILE.index("AS runtime") :]
    installed = set(re.search(r"install -y --no-install-recommends ([^\\&]+)", runtime).group(1).split())
    base = {"libc6", "libgcc-s1", "libstdc++6", "libzstd1", "zlib1g"}  # in debian:*-slim already
    needed: dict[str, set[str]] = {}
    for binary in sorted(job_binaries() | {"lakectl"}):
        path = _binary(binary)
        for line in subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=True).stdout.splitlines():
            m = re.search(r"=>\s+(\S+)", line)
            if not m or not m.group(1).startswith("/"):
                continue
            owner = subprocess.run(["dpkg", "-S", os.path.realpath(m.group(1))], capture_output=True, text=True)
            if owner.returncode != 0:
                owner = subprocess.run(["dpkg", "-S", m.group(1)], capture_output=True, text=True)
            package = owner.stdout.split(":")[0].strip()
            assert package, f"{binary}: no Debian package owns {m.group(1)}"
            needed.setdefault(package, set()).add(binary)
    missing = {p: sorted(b) for p, b in needed.items() if p not in installed | base}
    assert not missing, f"runtime stage lacks packages the binaries link: {missing}"


# --- helpers -------------------------------------------------------------------------------

def _sample_settings_keys() -> list[str]:
    return list(json.loads((REPO / "tests" / "deploy" / "dag_settings.sample.json").read_text()))
