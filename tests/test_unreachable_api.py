"""PER_NODE on Dask when a worker cannot reach the Prefect API: its nodes fail with a
message that says so, the build ends in bounded time, and nothing runs unseen. Real dbt on
PostgreSQL, real Dask worker processes whose PREFECT_API_URL names a port nothing listens on."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from support.faults import free_port
from support.orchestration import dask_runner, orchestrate
from support.projects import make_pg_project

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_a_worker_that_cannot_reach_the_api_fails_its_nodes_with_a_clear_message(
    tmp_path: Path, postgres: Any, pg_secret_block: str
) -> None:
    from distributed import LocalCluster

    nowhere = f"http://127.0.0.1:{free_port()}/api"
    project = make_pg_project(tmp_path, postgres, "unreachable")
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
        env={"PREFECT_API_URL": nowhere},
    ) as cluster:
        started = time.monotonic()
        run = orchestrate(project, dask_runner(cluster), raise_on_failure=False, record_timeout_seconds=10)
        elapsed = time.monotonic() - started
    assert run.error is None
    statuses = {unique_id: result["status"] for unique_id, result in run.result.items()}
    errors = {unique_id for unique_id, status in statuses.items() if status == "error"}
    # The roots fail; everything below them is skipped, as after any failure.
    assert errors and set(statuses.values()) == {"error", "skipped"}
    message = run.result[sorted(errors)[0]]["error"]["message"]
    assert message.startswith("worker ")
    assert f"cannot reach the Prefect API (no answer from {nowhere}/health), so dbt-prefect did not run this node" in message
    assert message.endswith("check PREFECT_API_URL and the network of the worker")
    assert elapsed < 180
