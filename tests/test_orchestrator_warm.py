"""The orchestrator's warm workers: one dbt session per worker process and project.

Real dbt on PostgreSQL, a real dask.distributed LocalCluster (2 worker processes), a real
Prefect server. What is observed: the session counter on each worker, the nodes that
paid a cold start, and PostgreSQL's backend pid of the connection each node ran on.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from dbt_prefect.orchestrator.warm_project import WORKER_DIR_PREFIX
from support.orchestration import dask_runner, orchestrate
from support.projects import make_small_project
from support.prefect_api import by_name, message_of, poll, state_of, task_runs

pytestmark = pytest.mark.usefixtures("prefect_server", "pg_secret_block")

# Six independent tables, each recording the backend pid of the connection it ran on.
PID_MODELS = {
    f"pid_{i}.sql": "{{ config(materialized='table') }}\nselect pg_backend_pid() as pid"
    for i in range(1, 7)
}


def worker_dirs() -> set[str]:
    """The warm projects' private directories in this test process's temporary directory,
    which the workers it starts share."""
    return {path.name for path in Path(tempfile.gettempdir()).glob(f"{WORKER_DIR_PREFIX}*")}


def pids_by_worker(result: Any, postgres: Any, schema: str) -> dict[str, set[int]]:
    found: dict[str, set[int]] = defaultdict(set)
    for r in result.results:
        (pid,) = postgres.query(f'select pid from "{schema}"."{r.node.name}"')[0]
        found[r.worker].add(pid)
    return dict(found)


def test_each_worker_sets_dbt_up_once_and_keeps_its_connection_across_nodes_and_builds(
    tmp_path: Path, postgres: Any, dask_cluster: Any
) -> None:
    project = make_small_project(tmp_path, postgres, "warm_pid", "warm_pid", PID_MODELS)
    first = orchestrate(project, dask_runner(dask_cluster))
    assert first.state.is_completed(), first.error
    assert len(first.result.results) == 6
    workers = {r.worker for r in first.result.results}
    # The first node of the project on each worker pays the set-up; no other node does.
    for worker in workers:
        cold = [r for r in first.result.results if r.worker == worker and r.cold_start_seconds is not None]
        assert len(cold) == 1, (worker, [(r.node.name, r.cold_start_seconds) for r in first.result.results])
    # Every node ran in its worker's warm dbt session, none through dbtRunner.
    assert [r.warm_session for r in first.result.results] == [True] * 6
    # Every node a worker ran used the same PostgreSQL connection.
    first_pids = pids_by_worker(first.result, postgres, "warm_pid")
    assert all(len(pids) == 1 for pids in first_pids.values()), first_pids
    assert len({next(iter(p)) for p in first_pids.values()}) == len(workers)

    # A second build on the warm cluster: no set-up, and the same connections.
    second = orchestrate(project, dask_runner(dask_cluster))
    assert second.state.is_completed(), second.error
    assert [r.cold_start_seconds for r in second.result.results] == [None] * 6
    assert [r.warm_session for r in second.result.results] == [True] * 6
    second_pids = pids_by_worker(second.result, postgres, "warm_pid")
    for worker, pids in second_pids.items():
        assert len(pids) == 1
        if worker in first_pids:
            assert pids == first_pids[worker], (worker, pids, first_pids[worker])


# Appends one row per build, unless a full refresh rebuilds it.
INCREMENTAL = {
    "history.sql": (
        "{{ config(materialized='incremental') }}\n"
        "select '{{ var(\"label\") }}'::text as label, {{ 'true' if flags.FULL_REFRESH else 'false' }} as full_refresh"
    ),
    "label.sql": "{{ config(materialized='view') }}\nselect '{{ var(\"label\") }}'::text as label",
}


def test_vars_and_full_refresh_reach_the_node_on_a_warm_worker(tmp_path: Path, postgres: Any, dask_cluster: Any) -> None:
    project = make_small_project(tmp_path, postgres, "warm_incr", "warm_incr", INCREMENTAL)

    def build(label: str, full_refresh: bool = False) -> list[tuple[str, bool]]:
        outcome = orchestrate(
            project, dask_runner(dask_cluster), build={"vars": {"label": label}, "full_refresh": full_refresh}
        )
        assert outcome.state.is_completed(), outcome.error
        assert postgres.query("select label from warm_incr.label") == [(label,)]
        return sorted(postgres.query("select label, full_refresh from warm_incr.history"))

    assert build("a") == [("a", False)]
    assert build("b") == [("a", False), ("b", False)]
    assert build("c", full_refresh=True) == [("c", True)]
    assert build("d") == [("c", True), ("d", False)]


# Fails on every odd attempt: the sequence is created outside the model's transaction, and
# nextval() is not rolled back. The ephemeral parent is inlined as a CTE on every attempt.
RETRIED = {
    "base_rows.sql": "{{ config(materialized='ephemeral') }}\nselect 1 as id union all select 2",
    "retried.sql": (
        "{{ config(materialized='table', pre_hook=before_begin("
        "\"create sequence if not exists \" ~ target.schema ~ \".retried_attempts\")) }}\n"
        "select count(*) as n, 1 / ((nextval('{{ target.schema }}.retried_attempts') + 1) % 2) as attempt_ok\n"
        "from {{ ref('base_rows') }}"
    ),
}


def test_a_retry_and_a_second_build_on_a_warm_worker_recompile_the_ephemeral_cte(
    tmp_path: Path, postgres: Any, dask_cluster: Any
) -> None:
    project = make_small_project(tmp_path, postgres, "warm_retry", "warm_retry", RETRIED)
    for _ in range(2):
        outcome = orchestrate(project, dask_runner(dask_cluster), retries=1)
        assert outcome.state.is_completed(), outcome.error
        run = by_name(task_runs(outcome.flow_run_id))["model retried"]
        assert state_of(run) == ("COMPLETED", "Completed"), message_of(run)
        assert run.run_count == 2
        assert postgres.query("select n from warm_retry.retried") == [(2,)]


def test_the_process_pool_task_runner_runs_nodes_on_warm_pool_processes(tmp_path: Path, postgres: Any) -> None:
    import os

    from prefect.task_runners import ProcessPoolTaskRunner

    project = make_small_project(tmp_path, postgres, "warm_pool", "warm_pool", PID_MODELS)
    worker_dirs_before = worker_dirs()
    outcome = orchestrate(project, ProcessPoolTaskRunner(max_workers=2))
    assert outcome.state.is_completed(), outcome.error
    assert sorted(r.status for r in outcome.result.results) == ["success"] * 6
    runs = task_runs(outcome.flow_run_id)
    assert sorted(run.name for run in runs) == [f"model pid_{i}" for i in range(1, 7)]
    assert {state_of(run) for run in runs} == {("COMPLETED", "Completed")}
    workers = {r.worker for r in outcome.result.results}
    assert str(os.getpid()) not in {w.rsplit(":", 1)[1] for w in workers}
    assert 1 <= len(workers) <= 2
    for worker in workers:
        ran = [r for r in outcome.result.results if r.worker == worker]
        assert len([r for r in ran if r.cold_start_seconds is not None]) == 1
    pids = pids_by_worker(outcome.result, postgres, "warm_pool")
    assert all(len(p) == 1 for p in pids.values()), pids
    # The pool's processes exited with the flow's task runner, and took their private files along.
    assert poll(worker_dirs, lambda dirs: dirs == worker_dirs_before, timeout=30) == worker_dirs_before


# Replacing a view drops its backup with CASCADE in PostgreSQL, and with it the child views
# built on it, possibly by another worker: no worker may trust what it listed before.
CASCADE = {
    "parent.sql": "{{ config(materialized='view') }}\nselect 1 as id",
    **{f"child_{i}.sql": "{{ config(materialized='view') }}\nselect id from {{ ref('parent') }}" for i in range(1, 7)},
    **{f"other_{i}.sql": "{{ config(materialized='view') }}\nselect 2 as id" for i in range(1, 4)},
}


def test_views_replaced_on_other_workers_are_not_taken_from_a_stale_cache(
    tmp_path: Path, postgres: Any, dask_cluster: Any
) -> None:
    project = make_small_project(tmp_path, postgres, "warm_cascade", "warm_cascade", CASCADE)
    for _ in range(3):
        outcome = orchestrate(project, dask_runner(dask_cluster))
        assert outcome.state.is_completed(), outcome.error
        assert sorted(r.status for r in outcome.result.results) == ["success"] * 10
    assert postgres.relations("warm_cascade") == {"parent", *(f"child_{i}" for i in range(1, 7)), *(f"other_{i}" for i in range(1, 4))}
