"""The orchestrator's run_results.json (orchestrator/run_results.py), checked by dbt itself:
real `dbt build` and `dbt retry` on a copy of the integration project, no Prefect server."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from dbt.artifacts.schemas.run import RunResultsArtifact
from dbt.cli.main import dbtRunner
from dbt.contracts.state import load_result_state

from dbt_prefect.orchestrator.run_results import NodeRunRecord, record_from_dbt_result, write_run_results
from support.projects import INTEGRATION_PROJECT

ORDERS = Path("models") / "marts" / "orders.sql"
# A mid-DAG model that compiles but fails in the warehouse: its children and tests are skipped.
BROKEN_ORDERS = "select * from {{ ref('stg_orders') }} where no_such_column = 1"
# The statuses dbt retry reruns (dbt/task/retry.py, RETRYABLE_STATUSES).
RETRYABLE = {"error", "fail", "skipped", "runtime error", "partial success"}


def dbt_args(project: Path) -> list[str]:
    return ["--project-dir", str(project), "--profiles-dir", str(project)]


def build_with_a_broken_model(project: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """A real `dbt build` with orders broken, its run_results.json replaced by ours.

    Returns dbt's status per unique_id and dbt's own run_results.json.
    """
    (project / ORDERS).write_text(BROKEN_ORDERS)
    result = dbtRunner().invoke(["build", *dbt_args(project)])
    assert not result.success and result.result is not None
    statuses = {r.node.unique_id: str(r.status) for r in result.result.results}
    assert statuses["model.shop.orders"] == "error" and "skipped" in statuses.values()

    dbts_file = project / "target" / "run_results.json"
    dbts_own = json.loads(dbts_file.read_text())
    dbts_file.unlink()
    write_run_results(
        project / "target",
        [record_from_dbt_result(r) for r in result.result.results],
        elapsed_seconds=result.result.elapsed_time,
        invocation_args={
            "project_dir": str(project),
            "profiles_dir": str(project),
            "select": None,
            "full_refresh": False,
        },
    )
    return statuses, dbts_own


def test_dbt_reads_our_run_results_with_dbts_statuses(shop_project: Path) -> None:
    statuses, dbts_own = build_with_a_broken_model(shop_project)
    path = shop_project / "target" / "run_results.json"

    # What dbt retry and --state read it with.
    loaded = load_result_state(path)
    assert loaded is not None
    assert {r.unique_id: str(r.status) for r in loaded.results} == statuses
    assert loaded.args["which"] == "build"

    ours = json.loads(path.read_text())
    jsonschema.validate(ours, RunResultsArtifact.json_schema())
    assert ours["metadata"]["dbt_schema_version"] == dbts_own["metadata"]["dbt_schema_version"]
    assert ours.keys() == dbts_own.keys()
    assert ours["metadata"].keys() == dbts_own["metadata"].keys()
    assert {tuple(r) for r in ours["results"]} == {tuple(r) for r in dbts_own["results"]}
    # dbt's own fields, node by node, where the record keeps them as dbt had them.
    kept = ("status", "message", "failures", "thread_id", "adapter_response", "compiled_code", "relation_name")
    theirs = {r["unique_id"]: {k: r[k] for k in kept} for r in dbts_own["results"]}
    assert {r["unique_id"]: {k: r[k] for k in kept} for r in ours["results"]} == theirs


def test_dbt_retry_reruns_exactly_the_failed_and_skipped_nodes(shop_project: Path) -> None:
    statuses, _ = build_with_a_broken_model(shop_project)
    failed_or_skipped = {uid for uid, status in statuses.items() if status in RETRYABLE}
    assert len(failed_or_skipped) > 1

    shutil.copyfile(INTEGRATION_PROJECT / ORDERS, shop_project / ORDERS)
    retry = dbtRunner().invoke(["retry", *dbt_args(shop_project)])

    assert retry.success, retry.exception
    # The project's on-run-start/end hooks run with any build; retry never reruns hooks by id.
    rerun = {
        r.node.unique_id: str(r.status) for r in retry.result.results if not r.node.unique_id.startswith("operation.")
    }
    assert set(rerun) == failed_or_skipped
    assert set(rerun.values()) <= {"success", "pass"}


def write_orders_as(target_dir: Path, status: str) -> Path:
    return write_run_results(
        target_dir, [NodeRunRecord("model.shop.orders", status)], elapsed_seconds=1.0, invocation_args={}
    )


def test_args_are_the_given_invocation_args_under_dbt_flag_names(tmp_path: Path) -> None:
    path = write_run_results(
        tmp_path,
        [],
        elapsed_seconds=1.5,
        invocation_args={
            "select": ("tag:marts", "stg_orders"),
            "exclude": "customers",
            "full-refresh": True,
            "target": "prod",
            "threads": 4,
            "vars": {"region": "eu", "DBT_ENV_SECRET_TOKEN": "s3cret", "dsn": "postgres://u:s3cret@h"},
            "state": None,
            "project_dir": "/srv/shop",
            "which": "run",
        },
    )

    assert json.loads(path.read_text())["args"] == {
        "select": ["tag:marts", "stg_orders"],
        "exclude": ["customers"],
        "full_refresh": True,
        "target": "prod",
        "threads": 4,
        # As dbt scrubs its own: a secret var's value, wherever it appears in vars.
        "vars": {"region": "eu", "DBT_ENV_SECRET_TOKEN": "*****", "dsn": "postgres://u:*****@h"},
        "project_dir": "/srv/shop",
        "which": "build",
    }


def test_no_environment_value_reaches_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # dbt copies DBT_ENV_CUSTOM_ENV_* into metadata.env of its own artifacts.
    monkeypatch.setenv("DBT_ENV_CUSTOM_ENV_DEPLOY_KEY", "do-not-write-me")
    path = write_run_results(tmp_path, [], elapsed_seconds=0.0, invocation_args={})

    assert json.loads(path.read_text())["metadata"]["env"] == {}
    assert "do-not-write-me" not in path.read_text()


def test_a_record_becomes_dbts_result_entry(tmp_path: Path) -> None:
    started = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    record = NodeRunRecord(
        "test.shop.unique_orders_order_id",
        "fail",
        message="Got 2 results, configured to fail if != 0",
        started_at=started,
        completed_at=started.replace(second=7),
        execution_time=2.0,
        failures=2,
        thread_id="Thread-3",
        compiled_code="select 1",
    )
    path = write_run_results(
        tmp_path,
        [record],
        elapsed_seconds=3.0,
        invocation_args={},
        invocation_id="0b5e1b2c-aaaa-bbbb-cccc-000000000001",
    )

    written = json.loads(path.read_text())
    assert written["results"] == [
        {
            "status": "fail",
            "timing": [
                {"name": "execute", "started_at": "2025-01-02T03:04:05Z", "completed_at": "2025-01-02T03:04:07Z"}
            ],
            "thread_id": "Thread-3",
            "execution_time": 2.0,
            "adapter_response": {},
            "message": "Got 2 results, configured to fail if != 0",
            "failures": 2,
            "unique_id": "test.shop.unique_orders_order_id",
            "compiled": True,
            "compiled_code": "select 1",
            "relation_name": None,
            "batch_results": None,
        }
    ]
    assert written["elapsed_time"] == 3.0
    assert written["metadata"]["invocation_id"] == "0b5e1b2c-aaaa-bbbb-cccc-000000000001"
    assert written["metadata"]["invocation_started_at"] == "2025-01-02T03:04:05Z"


def test_a_status_dbt_lacks_is_refused_and_the_old_file_kept(tmp_path: Path) -> None:
    path = write_orders_as(tmp_path, "success")
    before = path.read_text()

    with pytest.raises(ValueError, match="'cached' is not a dbt node status"):
        write_orders_as(tmp_path, "cached")

    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["run_results.json"]


def test_writing_is_atomic_and_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_orders_as(tmp_path, "success")
    before = path.read_text()

    def interrupted(src: Any, dst: Any) -> None:
        raise OSError("No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", interrupted)
        with pytest.raises(OSError):
            write_orders_as(tmp_path, "error")
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["run_results.json"]

    write_orders_as(tmp_path, "error")
    assert json.loads(path.read_text())["results"][0]["status"] == "error"
    assert os.listdir(tmp_path) == ["run_results.json"]
