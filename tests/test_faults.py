"""When the Prefect API fails during a run: dbt's work is never lost, invoke returns dbt's
result in bounded time, what could not be delivered is named once, and what was queued is
delivered when the API comes back. A real Prefect server process that the tests kill and
restart, a TCP proxy on 127.0.0.1 in front of it, real dbt in a child process."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.faults import Proxy, ServerProcess, run_orchestrator, start_flow
from support.projects import make_shop_copy

pytestmark = pytest.mark.usefixtures("prefect_server")

# Runs until the test creates the resume file (at most 120 s): the fault happens while
# it runs, and the nodes after it finish once the test says so.
SLOW_MODEL = """def model(dbt, session):
    import os
    import time

    deadline = time.time() + 120
    while not os.path.exists({resume!r}) and time.time() < deadline:
        time.sleep(0.1)
    return session.sql("select 1 as id")
"""
# Nodes that finish while the API is away: their task runs, logs and asset events queue up.
AFTER_SLOW = [f"after_slow_{i}" for i in range(4)]


def fault_project(tmp_path: Path) -> tuple[Path, Path]:
    """The shop with a model that waits for the returned resume file, and nodes after it."""
    project = make_shop_copy(tmp_path)
    resume = tmp_path / "resume"
    marts = project / "models" / "marts"
    (marts / "slow.py").write_text(SLOW_MODEL.format(resume=str(resume)))
    for name in AFTER_SLOW:
        (marts / f"{name}.sql").write_text("select id from {{ ref('slow') }}\n")
    return project, resume


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("fault-server"))
    process.start()
    yield process
    process.kill()


def task_runs_of(api_url: str, flow_run_id: str) -> dict[str, Any]:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with SyncPrefectClient(api_url) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200)
    return {run.name: run for run in runs}


def expected_state(dbt_status: str) -> tuple[str, str]:
    return {"success": ("COMPLETED", "Completed"), "pass": ("COMPLETED", "Completed")}[dbt_status]


def assert_every_task_run_matches_dbt(api_url: str, marks: dict[str, Any], node_names: dict[str, str]) -> None:
    """Every node dbt ran has one task run, in the state dbt reported (polled with a bound)."""
    deadline = time.monotonic() + 30
    while True:
        runs = task_runs_of(api_url, marks["flow_run_id"])
        wrong = {
            name: (run.state.type.value, run.state.name) if run is not None and run.state else None
            for unique_id, name in node_names.items()
            for run in [runs.get(name)]
            if run is None or (run.state.type.value, run.state.name) != expected_state(marks["results"][unique_id])
        }
        if not wrong or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert wrong == {}, sorted(runs)
    assert len(runs) == len(node_names)


def node_names(marks: dict[str, Any]) -> dict[str, str]:
    """unique_id -> task run name (resource type, then name) of every node dbt ran but the
    project's hooks, which the runner does not mirror as task runs."""
    names = {}
    for unique_id in marks["results"]:
        parts = unique_id.split(".")
        if parts[0] == "operation":
            continue
        names[unique_id] = f"{parts[0]} {parts[2] if parts[0] == 'test' else parts[-1]}"
    return names


def test_a_slow_api_one_that_answers_503_and_dropped_connections_lose_nothing(
    tmp_path: Path, server: ServerProcess
) -> None:
    project, resume = fault_project(tmp_path)
    proxy = Proxy(server.port)
    try:
        proxy.set_mode("latency", latency=0.3)
        flow = start_flow(project, proxy.api_url, tmp_path)
        flow.wait_for_first_node()
        proxy.set_mode("503")
        time.sleep(2)
        # Then every connection dropped, open ones included, as when a network goes away.
        proxy.set_mode("drop")
        time.sleep(2)
        proxy.set_mode("latency", latency=0.3)
        resume.touch()
        marks, output, exited = flow.finish()
    finally:
        proxy.close()
    assert "invoke_raised" not in marks, output[-3000:]
    assert marks["success"] is True
    assert "could not deliver" not in output
    assert marks["invoke_returned"] - marks["dbt_done"] < 30
    # dbt's process-wide lock was free while invoke still talked to the slow API.
    assert marks["invoke_returned"] - marks["lock_free"] >= 0.3
    assert_every_task_run_matches_dbt(server.api_url, marks, node_names(marks))


def test_a_worker_that_cannot_reach_the_api_fails_its_nodes_with_a_clear_message(
    tmp_path: Path, server: ServerProcess
) -> None:
    project = make_shop_copy(tmp_path)
    proxy = Proxy(server.port)
    try:
        proxy.set_mode("health-503")
        started = time.monotonic()
        results, output = run_orchestrator(project, proxy.api_url, tmp_path)
        elapsed = time.monotonic() - started
    finally:
        proxy.close()
    statuses = {unique_id: result["status"] for unique_id, result in results.items()}
    errors = sorted(unique_id for unique_id, status in statuses.items() if status == "error")
    # The roots fail, everything below them is skipped: no node ran unseen.
    assert errors and set(statuses.values()) == {"error", "skipped"}
    message = results[errors[0]]["error"]["message"]
    assert message.startswith("worker ")
    assert (
        f"cannot reach the Prefect API (no answer from {proxy.api_url}/health), so dbt-prefect did not run this node; "
        "check PREFECT_API_URL and the network of the worker"
    ) in message
    assert elapsed < 180


def test_a_server_restarted_during_the_run_receives_everything_that_was_queued(
    tmp_path: Path, server: ServerProcess
) -> None:
    project, resume = fault_project(tmp_path)
    flow = start_flow(project, server.api_url, tmp_path)
    flow.wait_for_first_node()
    server.kill()
    server.start()
    resume.touch()
    marks, output, exited = flow.finish()
    assert "invoke_raised" not in marks, output[-3000:]
    assert marks["success"] is True
    assert "could not deliver" not in output, output[-3000:]
    names = node_names(marks)
    assert {f"model {n}" for n in AFTER_SLOW} <= set(names.values())
    assert_every_task_run_matches_dbt(server.api_url, marks, names)


def test_a_server_that_goes_away_costs_neither_dbt_s_work_nor_the_process_exit(
    tmp_path: Path, server: ServerProcess
) -> None:
    project, resume = fault_project(tmp_path)
    flow = start_flow(project, server.api_url, tmp_path)
    flow.wait_for_first_node()
    server.kill()
    resume.touch()
    # Prefect's flow engine retries its last state change for about a minute (PREFECT_CLIENT_MAX_RETRIES).
    marks, output, exited = flow.finish(timeout=240)
    # dbt ran to the end, and invoke gave its result.
    assert "invoke_raised" not in marks, output[-3000:]
    assert marks["success"] is True
    assert set(marks["results"].values()) == {"success", "pass"}
    assert marks["invoke_returned"] - marks["dbt_done"] < 10
    assert exited - marks["flow_done"] < 10
    warnings = re.findall(r"dbt-prefect could not deliver (\d+) task-run state\(s\), (\d+) log line\(s\), (\d+) asset event\(s\)", output)
    assert len(warnings) == 1, output[-3000:]
    states, lines, assets = (int(n) for n in warnings[0])
    # At least the states, lines and materializations of the nodes after the slow one.
    assert states >= len(AFTER_SLOW)
    assert lines >= len(AFTER_SLOW)
    assert assets >= len(AFTER_SLOW)
