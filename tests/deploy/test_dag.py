"""The Airflow DAG, loaded by real Airflow (2.10, as on MWAA) with the Amazon provider."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path


from cli import assert_cli_accepts

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "airflow" / "dags"
SAMPLE = json.loads((Path(__file__).with_name("dag_settings.sample.json")).read_text())


def load(tmp_path: Path, **overrides):
    """A DagBag of the project's DAG folder with settings like Terraform writes them."""
    from airflow.models import DagBag

    settings = {**SAMPLE, **overrides}
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    os.environ["LAKEHOUSE_DAG_SETTINGS"] = str(path)
    sys.modules.pop("lakehouse_pipeline", None)
    bag = DagBag(dag_folder=str(DAGS), include_examples=False, safe_mode=False)
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags["lakehouse_pipeline"], settings


def upstream(dag, task_id):
    return set(dag.get_task(task_id).upstream_task_ids)


def test_scheduled_mode_tasks_and_dependencies(tmp_path):
    dag, settings = load(tmp_path, raw_append_mode="scheduled")
    tables = settings["maintained_tables"]
    expected = {"raw_append", "stream_join", "merge_upsert", "compaction_window", "vacuum_window", "manifest_processed", "catalog_processed"}
    expected |= {f"compact_{t}" for t in tables} | {f"vacuum_{t}" for t in tables}
    assert set(dag.task_ids) == expected
    assert upstream(dag, "stream_join") == {"raw_append"}
    assert upstream(dag, "merge_upsert") == {"stream_join"}
    assert upstream(dag, "compaction_window") == {"merge_upsert"}
    for t in tables:
        assert upstream(dag, f"compact_{t}") == {"compaction_window"}
        assert upstream(dag, f"vacuum_{t}") == {"vacuum_window"}
    # Manifests list the compacted files; the catalog follows the manifests; vacuum comes last.
    assert upstream(dag, "manifest_processed") == {"compaction_window"} | {f"compact_{t}" for t in tables}
    assert upstream(dag, "catalog_processed") == {"manifest_processed"}
    assert upstream(dag, "vacuum_window") == {"catalog_processed", "compaction_window"} | {f"compact_{t}" for t in tables}


def test_continuous_mode_leaves_raw_append_to_the_service(tmp_path):
    dag, _ = load(tmp_path, raw_append_mode="continuous")
    assert "raw_append" not in dag.task_ids
    assert upstream(dag, "stream_join") == set()


def test_dag_run_settings(tmp_path):
    dag, _ = load(tmp_path)
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert str(dag.schedule_interval) == "@hourly"
    for task in dag.tasks:
        assert task.retries == 3, task.task_id
        assert task.retry_exponential_backoff, task.task_id
        assert task.execution_timeout is not None, task.task_id


def test_skips_do_not_stop_downstream_work(tmp_path):
    """After a "no new data" skip the next jobs and all maintenance still run."""
    dag, _ = load(tmp_path)
    # The first job and the window-gated maintenance keep the default rule (all_success).
    gated = {t for t in dag.task_ids if t.startswith(("compact_", "vacuum_")) and t != "vacuum_window"}
    for task in dag.tasks:
        if task.task_id not in gated | {"raw_append"}:
            assert task.trigger_rule == "none_failed", task.task_id
    for window in ("compaction_window", "vacuum_window"):
        # Only the window's own tasks are skipped outside it.
        assert dag.get_task(window).ignore_downstream_trigger_rules is False


def test_ecs_tasks_run_existing_subcommands_with_existing_flags(tmp_path):
    from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator

    dag, settings = load(tmp_path, raw_append_mode="scheduled")
    ecs = [t for t in dag.tasks if isinstance(t, EcsRunTaskOperator)]
    assert len(ecs) == 3 + 2 * len(settings["athena"]["tables"]) + 2 * len(settings["maintained_tables"])
    configured = _configured_tables()
    for task in ecs:
        (override,) = task.overrides["containerOverrides"]
        assert override["name"] == settings["container"]
        command = override["command"]
        job = next(j for j, family in settings["task_definitions"].items() if family == task.task_definition)
        assert command[0] == job, f"{task.task_id} runs {command[0]} in the {job} task definition"
        assert_cli_accepts(command)
        if command[0] == "maintenance":
            assert command[2] in configured, f"{task.task_id}: {command[2]} is not a table of schemas/pipeline.toml"
        assert task.reattach is True
        assert task.launch_type == "FARGATE"
        assert task.awslogs_group == settings["log_groups"][job]
        assert task.awslogs_stream_prefix == f"{job}/{settings['container']}"
        assert task.network_configuration["awsvpcConfiguration"]["assignPublicIp"] == "DISABLED"


def test_catalog_task_applies_the_glue_catalog(tmp_path):
    dag, settings = load(tmp_path)
    task = dag.get_task("catalog_processed")
    command = task.overrides["containerOverrides"][0]["command"]
    assert command == ["maintenance", "catalog", "processed", "--database", settings["athena"]["database"], "--apply"]


def test_exit_code_3_is_a_skip(tmp_path):
    load(tmp_path)
    module = _import_dag_module()

    def response(code, name="job", status="STOPPED"):
        return {"tasks": [{"containers": [{"name": name, "lastStatus": status, "exitCode": code}]}], "failures": []}

    assert module.container_outcome(response(3), "job") == "skip"
    assert module.container_outcome(response(0), "job") == "check"
    assert module.container_outcome(response(1), "job") == "check"
    assert module.container_outcome(response(78), "job") == "check"
    assert module.container_outcome(response(3, name="sidecar"), "job") == "check"
    assert module.container_outcome(response(3, status="RUNNING"), "job") == "check"


def test_maintenance_windows(tmp_path):
    load(tmp_path)
    module = _import_dag_module()
    at = lambda *a: datetime(*a, tzinfo=timezone.utc)  # noqa: E731
    assert module.in_compaction_window(logical_date=at(2026, 11, 24, 2))
    assert not module.in_compaction_window(logical_date=at(2026, 11, 24, 3))
    assert module.in_vacuum_window(logical_date=at(2026, 11, 29, 2))  # a Sunday
    assert not module.in_vacuum_window(logical_date=at(2026, 11, 28, 2))
    assert not module.in_vacuum_window(logical_date=at(2026, 11, 29, 3))


def test_missing_settings_is_a_clear_import_error(tmp_path):
    from airflow.models import DagBag

    os.environ["LAKEHOUSE_DAG_SETTINGS"] = str(tmp_path / "absent.json")
    bag = DagBag(dag_folder=str(DAGS), include_examples=False, safe_mode=False)
    (error,) = bag.import_errors.values()
    assert "terraform apply uploads it beside the DAG" in error


def _import_dag_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("lakehouse_pipeline_module", DAGS / "lakehouse_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _configured_tables() -> set[str]:
    import tomllib

    return set(tomllib.loads((REPO / "schemas" / "pipeline.toml").read_text())["tables"])
