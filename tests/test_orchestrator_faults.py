"""The per-node orchestrator on Dask when a worker process dies in the middle of a node.

Real dbt on PostgreSQL, the session's dask.distributed LocalCluster (2 worker processes,
restarted by their nannies), a real Prefect server. The worker is found by the TCP port
of the PostgreSQL connection that is running the node's sleep, and killed with SIGKILL.
Dask runs the node again elsewhere (and any finished node whose result died with the
worker); dbt-prefect counts the lost execution as one of the node's attempts.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest

from support.orchestration import dask_runner, orchestrate, worker_pids
from support.prefect_api import by_name, logs, message_of, poll, state_of, task_runs
from support.projects import make_small_project

pytestmark = pytest.mark.usefixtures("prefect_server", "pg_secret_block")

SCHEMA = "killed_worker"
# `sleepy` sleeps 60 s in PostgreSQL on its first attempt only (a sequence counts the
# attempts), outside the model's transaction, so an orphaned sleep holds no lock.
MODELS = {
    "upstream.sql": "{{ config(materialized='table') }}\nselect 1 as id",
    "sleepy.sql": (
        "{{ config(materialized='table', pre_hook=[before_begin("
        '"create sequence if not exists " ~ target.schema ~ ".sleepy_attempts"), before_begin('
        '"select /* killed-worker-sleep */ pg_sleep(case when nextval(\'" ~ target.schema ~ '
        '".sleepy_attempts\') = 1 then 60 else 0 end)")]) }}\n'
        "select id from {{ ref('upstream') }}"
    ),
    "downstream.sql": "{{ config(materialized='table') }}\nselect id from {{ ref('sleepy') }}",
}


def sleeping_client_port(postgres: Any) -> int | None:
    rows = postgres.query(
        "select client_port from pg_stat_activity where state = 'active' and query like %s and pid <> pg_backend_pid()",
        "%killed-worker-sleep%",
    )
    return rows[0][0] if len(rows) == 1 else None


def scheduler_records(cluster: Any) -> dict[str, Any]:
    from distributed import Client

    def records(dask_scheduler: Any) -> dict[str, Any]:
        return dict(dask_scheduler.task_metadata.get("dbt-prefect-node-executions", {}))

    with Client(cluster) as client:
        return client.run_on_scheduler(records)


def process_with_local_port(pids: set[int], port: int) -> int | None:
    for pid in pids:
        if any(c.laddr and c.laddr.port == port for c in psutil.Process(pid).net_connections(kind="tcp")):
            return pid
    return None


@pytest.mark.parametrize("retries", [1, 0])
def test_a_worker_killed_in_the_middle_of_a_node_spends_one_of_its_retries(
    tmp_path: Path, postgres: Any, dask_cluster: Any, retries: int
) -> None:
    schema = f"{SCHEMA}_{retries}"
    project = make_small_project(tmp_path, postgres, schema, schema, MODELS)
    before = worker_pids(dask_cluster)
    killed: dict[str, Any] = {}

    def kill_the_sleeping_worker() -> None:
        port = poll(lambda: sleeping_client_port(postgres), lambda p: p is not None, timeout=120)
        if port is None:
            return
        killed["pid"] = process_with_local_port(before, port)
        if killed["pid"] is not None:
            os.kill(killed["pid"], signal.SIGKILL)

    killer = threading.Thread(target=kill_the_sleeping_worker, daemon=True)
    killer.start()
    try:
        outcome = orchestrate(project, dask_runner(dask_cluster), retries=retries, raise_on_failure=False)
    finally:
        killer.join(timeout=130)
        # The killed worker's sleep goes on in PostgreSQL (nobody is left to cancel it).
        postgres.query(
            "select pg_terminate_backend(pid) from pg_stat_activity where query like %s and pid <> pg_backend_pid()",
            "%killed-worker-sleep%",
        )
    assert killed.get("pid") in before, f"no worker was running the sleep: {killed}"
    killed_worker = f"{socket.gethostname()}:{killed['pid']}"
    assert outcome.state.is_completed(), outcome.error
    runs = by_name(task_runs(outcome.flow_run_id))
    assert sorted(runs) == ["model downstream", "model sleepy", "model upstream"]
    by_node = {r.node.name: r for r in outcome.result.results}
    sleepy = runs["model sleepy"]
    # What the node tasks noted on the scheduler is gone with the build.
    assert not set(scheduler_records(dask_cluster)) & {str(run.id) for run in runs.values()}
    if retries:
        # Run again on a live worker, as its second and last attempt.
        assert [(r.node.name, r.status) for r in outcome.result.results] == [
            ("upstream", "success"),
            ("sleepy", "success"),
            ("downstream", "success"),
        ]
        assert by_node["sleepy"].worker != killed_worker
        assert {name: state_of(run) for name, run in runs.items()} == {
            "model downstream": ("COMPLETED", "Completed"),
            "model sleepy": ("COMPLETED", "Completed"),
            "model upstream": ("COMPLETED", "Completed"),
        }, {name: message_of(run) for name, run in runs.items()}
        assert sleepy.run_count == 2
        said = [entry.message for entry in logs(outcome.flow_run_id) if entry.task_run_id == sleepy.id]
        assert f"The Dask worker running this node died ({killed_worker}); this is attempt 2 of 2" in said
        assert postgres.query(f"select count(*) from {schema}.downstream") == [(1,)]
        assert postgres.query(f"select last_value from {schema}.sleepy_attempts") == [(2,)]
    else:
        # No retry left: the node fails without running again, and its child is skipped.
        message = (
            f"the Dask worker running this node died ({killed_worker}), and retries=0 allows no attempt after 1 lost"
        )
        assert [(r.node.name, r.status, r.message) for r in outcome.result.results][:2] == [
            ("upstream", "success", "SELECT 1"),
            ("sleepy", "error", message),
        ]
        assert (by_node["downstream"].status, by_node["downstream"].failed_upstream) == (
            "skipped",
            ("model.killed_worker_0.sleepy",),
        )
        assert not outcome.result.success
        assert {name: state_of(run) for name, run in runs.items()} == {
            "model downstream": ("COMPLETED", "Skipped"),
            "model sleepy": ("FAILED", "Failed"),
            "model upstream": ("COMPLETED", "Completed"),
        }, {name: message_of(run) for name, run in runs.items()}
        assert message_of(sleepy) == message
        assert sleepy.run_count == 2
        assert postgres.query(f"select last_value from {schema}.sleepy_attempts") == [(1,)]
