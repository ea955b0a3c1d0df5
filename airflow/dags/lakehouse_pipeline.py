"""The lakehouse pipeline on MWAA: every hour raw-append (when scheduled) -> stream-join ->
merge-upsert -> symlink manifests -> Glue catalog; compaction once a day and vacuum once a
week, in the same run so they never race the writers (max_active_runs=1).

Each job runs as an ECS Fargate task from the task definitions Terraform creates; the settings
(cluster, subnets, task definitions, log groups, Athena names) come from
``lakehouse_pipeline.json`` beside this file, which Terraform writes (or from the file named by
``LAKEHOUSE_DAG_SETTINGS``). A job that exits 3 ("no new data") is marked skipped, and the tasks
after it still run (trigger rule ``none_failed``).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow import DAG
from airflow.exceptions import AirflowSkipException
from airflow.operators.python import ShortCircuitOperator
from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator
from airflow.utils.trigger_rule import TriggerRule

# The jobs' exit code for "trigger once found nothing new" (DESIGN §3 run contract).
NO_NEW_DATA_EXIT_CODE = 3
COMPACTION_HOUR_UTC = 2
VACUUM_WEEKDAY = 6  # Sunday (datetime.weekday())


def load_settings() -> dict:
    """The deployment's settings, written by Terraform next to this file."""
    path = Path(os.environ.get("LAKEHOUSE_DAG_SETTINGS") or Path(__file__).with_name("lakehouse_pipeline.json"))
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise RuntimeError(f"{path} is missing: terraform apply uploads it beside the DAG (or set LAKEHOUSE_DAG_SETTINGS)") from e


def container_outcome(describe_tasks_response: dict, container: str) -> str:
    """``skip`` when the job's container exited with the no-new-data code, else ``check``
    (the stock success check decides)."""
    for task in describe_tasks_response.get("tasks", []):
        for c in task.get("containers", []):
            if c.get("name") == container and c.get("lastStatus") == "STOPPED" and c.get("exitCode") == NO_NEW_DATA_EXIT_CODE:
                return "skip"
    return "check"


class LakehouseJobOperator(EcsRunTaskOperator):
    """Runs one job as an ECS task; exit code 3 ("no new data") becomes a skip."""

    def _check_success_task(self) -> None:
        if self.client and self.arn:
            response = self.client.describe_tasks(cluster=self.cluster, tasks=[self.arn])
            if container_outcome(response, CONTAINER) == "skip":
                raise AirflowSkipException("no new data (exit code 3)")
        super()._check_success_task()


def in_compaction_window(logical_date: datetime, **_) -> bool:
    """Compaction runs once a day, in the run of COMPACTION_HOUR_UTC."""
    return logical_date.hour == COMPACTION_HOUR_UTC


def in_vacuum_window(logical_date: datetime, **_) -> bool:
    """Vacuum runs once a week, in the compaction run of VACUUM_WEEKDAY."""
    return logical_date.weekday() == VACUUM_WEEKDAY and in_compaction_window(logical_date)


SETTINGS = load_settings()
# The container name in every task definition (terraform/ecs.tf).
CONTAINER = SETTINGS["container"]


def job_task(task_id: str, job: str, command: list[str], timeout: timedelta, **kwargs) -> LakehouseJobOperator:
    """An ECS task of `job`'s task definition running `command` (binary, subcommand, flags)."""
    return LakehouseJobOperator(
        task_id=task_id,
        cluster=SETTINGS["cluster"],
        task_definition=SETTINGS["task_definitions"][job],
        launch_type="FARGATE",
        overrides={"containerOverrides": [{"name": CONTAINER, "command": command}]},
        network_configuration={
            "awsvpcConfiguration": {
                "subnets": SETTINGS["subnets"],
                "securityGroups": SETTINGS["security_groups"],
                "assignPublicIp": "DISABLED",
            }
        },
        propagate_tags="TASK_DEFINITION",
        # A retried or restarted Airflow task finds the ECS task it started instead of starting
        # a second one (the jobs are exactly-once anyway; this avoids paying twice).
        reattach=True,
        awslogs_group=SETTINGS["log_groups"][job],
        awslogs_region=SETTINGS["region"],
        awslogs_stream_prefix=f"{job}/{CONTAINER}",
        region_name=SETTINGS["region"],
        execution_timeout=timeout,
        **kwargs,
    )


def once(job: str, **kwargs) -> LakehouseJobOperator:
    """`job --trigger once`: everything new, then exit (3 when there was nothing)."""
    return job_task(job.replace("-", "_"), job, [job, "--trigger", "once"], timedelta(hours=1), **kwargs)


default_args = {
    "owner": "data-platform",
    "retries": 3,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": timedelta(minutes=10),
}

with DAG(
    dag_id="lakehouse_pipeline",
    description="raw-append -> stream-join -> merge-upsert -> manifests -> Glue catalog; daily compaction, weekly vacuum",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    dagrun_timeout=timedelta(hours=3),
    tags=["lakehouse"],
    doc_md=__doc__,
) as dag:
    stream_join = once("stream-join", trigger_rule=TriggerRule.NONE_FAILED)
    if SETTINGS.get("raw_append_mode") == "scheduled":
        once("raw-append") >> stream_join
    merge_upsert = once("merge-upsert", trigger_rule=TriggerRule.NONE_FAILED)
    stream_join >> merge_upsert

    # Compaction before the manifests, so they list the compacted files; a skipped window
    # skips only the compactions (ignore_downstream_trigger_rules=False).
    compaction_window = ShortCircuitOperator(
        task_id="compaction_window",
        python_callable=in_compaction_window,
        ignore_downstream_trigger_rules=False,
        trigger_rule=TriggerRule.NONE_FAILED,
    )
    merge_upsert >> compaction_window
    compactions = [
        job_task(
            f"compact_{table}",
            "maintenance",
            ["maintenance", "compact", table, "--min-commit-interval", "2m"],
            timedelta(hours=2),
        )
        for table in SETTINGS["maintained_tables"]
    ]
    compaction_window >> compactions

    athena = SETTINGS["athena"]
    vacuum_window = ShortCircuitOperator(
        task_id="vacuum_window",
        python_callable=in_vacuum_window,
        ignore_downstream_trigger_rules=False,
        trigger_rule=TriggerRule.NONE_FAILED,
    )
    for table in athena["tables"]:
        manifest = job_task(
            f"manifest_{table}",
            "maintenance",
            ["maintenance", "manifest", table],
            timedelta(minutes=30),
            trigger_rule=TriggerRule.NONE_FAILED,
        )
        # The Glue catalog follows the Delta log: new partitions added, emptied ones removed,
        # schema changes applied (instead of MSCK REPAIR, which only ever adds).
        catalog = job_task(
            f"catalog_{table}",
            "maintenance",
            ["maintenance", "catalog", table, "--database", athena["database"], "--apply"],
            timedelta(minutes=30),
            trigger_rule=TriggerRule.NONE_FAILED,
        )
        compaction_window >> manifest
        compactions >> manifest
        manifest >> catalog >> vacuum_window

    # Vacuum waits for the manifests (they must not list files it deletes) and the compactions.
    compaction_window >> vacuum_window
    compactions >> vacuum_window
    vacuums = [
        job_task(f"vacuum_{table}", "maintenance", ["maintenance", "vacuum", table], timedelta(hours=2))
        for table in SETTINGS["maintained_tables"]
    ]
    vacuum_window >> vacuums
