"""A timeout or SIGTERM around PrefectDbtRunner().invoke stops dbt through dbt's own cancel
path: the warehouse queries in flight are cancelled, and no task run is left Running.

Real dbt on PostgreSQL, a real Prefect server. Two models sleep 60 s in PostgreSQL (dbt
runs them side by side); what is observed is PostgreSQL's pg_stat_activity and the task
runs read back through the Prefect client.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import dbt_prefect
from support.prefect_api import by_name, flow_run, message_of, poll, state_of, task_runs
from support.projects import make_small_project

pytestmark = pytest.mark.usefixtures("prefect_server", "pg_secret_block")


def sleeping_models(marker: str) -> dict[str, str]:
    return {
        "quick.sql": "select 1 as id",
        **{
            f"{name}.sql": f"{{{{ config(materialized='table') }}}}\n-- {marker}\nselect 1 as id from pg_sleep(60)"
            for name in ("sleepy_a", "sleepy_b")
        },
    }


def queries_of(postgres: Any, marker: str) -> list[tuple[Any, ...]]:
    """The build's queries PostgreSQL is running now."""
    return postgres.query(
        "select pid, state from pg_stat_activity where query like %s and state = 'active' and pid <> pg_backend_pid()",
        f"%-- {marker}%",
    )


def both_sleeping(postgres: Any, marker: str) -> bool:
    return len(queries_of(postgres, marker)) == 2


def assert_nodes_closed(flow_run_id: Any) -> dict[str, Any]:
    runs = by_name(task_runs(flow_run_id))
    assert state_of(runs["model quick"]) == ("COMPLETED", "Completed")
    # dbt reports the nodes whose queries it cancelled errored, with the warehouse's words
    # (dbt-postgres cancels by ending the query's backend).
    for name in ("sleepy_a", "sleepy_b"):
        run = runs[f"model {name}"]
        assert state_of(run) == ("FAILED", "Failed"), message_of(run)
        assert message_of(run).startswith(
            f"Database Error in model {name} (models/{name}.sql)\n  server closed the connection unexpectedly"
        ), message_of(run)
    assert not [name for name, run in runs.items() if run.state_type.value == "RUNNING"]
    return runs


# Where the timeout is, and so how Prefect enforces it in the thread running invoke:
# "task" and "flow": a SIGALRM handler raising CancelledError in the main thread;
# "task in a timed flow": the flow's alarm is taken, so a watcher thread injects
# CancelledError into the main thread, which dbt keeps blocked in a Condition wait.
TIMEOUTS = ["task", "flow", "task in a timed flow"]


@pytest.mark.parametrize("where", TIMEOUTS)
def test_a_timeout_around_invoke_cancels_the_queries_in_flight(tmp_path: Path, postgres: Any, where: str) -> None:
    from prefect import flow, task
    from prefect.context import FlowRunContext

    from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings

    marker = f"cancel_{TIMEOUTS.index(where)}"
    project = make_small_project(tmp_path, postgres, marker, marker, sleeping_models(marker))
    seen: dict[str, Any] = {}
    stop = threading.Event()

    def watch() -> None:  # when PostgreSQL first runs both sleeps
        while not stop.wait(0.2):
            if "sleeping" not in seen and both_sleeping(postgres, marker):
                seen["sleeping"] = time.monotonic()

    def invoke() -> None:
        PrefectDbtRunner(settings=PrefectDbtSettings(project_dir=project, profiles_dir=project)).invoke(["build"])

    build = task(invoke, timeout_seconds=15, task_run_name="dbt build")

    @flow(name="dbt-cancel-timeout", timeout_seconds={"task": None, "flow": 15}.get(where, 300))
    def timed_out() -> None:
        seen["flow_run_id"] = FlowRunContext.get().flow_run.id  # type: ignore[union-attr]
        if where == "flow":
            invoke()
        else:
            seen["task_state"] = build(return_state=True)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        flow_state = timed_out(return_state=True)
    finally:
        stop.set()
        watcher.join(timeout=5)
    returned = time.monotonic()
    assert "sleeping" in seen, "dbt had not started the sleeping models when the timeout fired"
    # The timeout fired 15 s after the start; dbt had cancelled and returned within 10 s.
    assert returned - started < 15 + 10, returned - started
    assert queries_of(postgres, marker) == []
    timed_out_state = flow_state if where == "flow" else seen["task_state"]
    assert (timed_out_state.type.value, timed_out_state.name) == ("FAILED", "TimedOut")
    kind = "Flow" if where == "flow" else "Task"
    assert timed_out_state.message == f"{kind} run exceeded timeout of 15.0 second(s)"
    runs = assert_nodes_closed(seen["flow_run_id"])
    expected = ["model quick", "model sleepy_a", "model sleepy_b"]
    assert sorted(runs) == (expected if where == "flow" else ["dbt build", *expected])


FLOW_SCRIPT = """
import sys
from pathlib import Path
from prefect import flow
from prefect.context import FlowRunContext
from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings

project, id_file, in_flow = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "in a flow"


def invoke():
    PrefectDbtRunner(settings=PrefectDbtSettings(project_dir=project, profiles_dir=project)).invoke(["build"])


@flow(name="dbt-cancel-sigterm")
def build():
    id_file.write_text(str(FlowRunContext.get().flow_run.id))
    invoke()


build() if in_flow else invoke()
"""


@pytest.mark.parametrize("where", ["in a flow", "outside a flow"])
def test_sigterm_to_the_process_cancels_the_queries_in_flight(tmp_path: Path, postgres: Any, where: str) -> None:
    marker = "cancel_sigterm" if where == "in a flow" else "cancel_sigterm_no_flow"
    project = make_small_project(tmp_path, postgres, marker, marker, sleeping_models(marker))
    script, id_file = tmp_path / "flow.py", tmp_path / "flow_run_id"
    script.write_text(FLOW_SCRIPT)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(dbt_prefect.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [sys.executable, str(script), str(project), str(id_file), where],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert poll(lambda: both_sleeping(postgres, marker), bool, timeout=120), "the sleeping models never started"
        process.send_signal(signal.SIGTERM)
        terminated = time.monotonic()
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)
    # dbt cancelled the queries, the runner closed the task runs, and the process ended.
    assert time.monotonic() - terminated < 10, output[-3000:]
    assert queries_of(postgres, marker) == []
    if where == "outside a flow":
        # No flow: nobody handles SIGTERM, so invoke raises TerminationSignal once dbt has stopped.
        assert process.returncode == 1, output[-3000:]
        assert output.rstrip().endswith("prefect.exceptions.TerminationSignal"), output[-3000:]
        return
    assert process.returncode == -signal.SIGTERM, output[-3000:]  # Prefect ends the process by the signal
    flow_run_id = id_file.read_text()
    run = poll(lambda: flow_run(flow_run_id), lambda r: r.state_type.value != "RUNNING", timeout=10)
    assert state_of(run) == ("CRASHED", "Crashed")
    assert message_of(run) == "Execution was aborted by a termination signal."
    runs = assert_nodes_closed(run.id)
    assert sorted(runs) == ["model quick", "model sleepy_a", "model sleepy_b"]


SERVED_FLOW = """
from prefect import flow
from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings


@flow(name="dbt-cancel-deployment")
def build(project: str) -> None:
    PrefectDbtRunner(settings=PrefectDbtSettings(project_dir=project, profiles_dir=project)).invoke(["build"])


if __name__ == "__main__":
    build.serve(name="cancel-test")
"""


def test_cancelling_a_deployment_flow_run_cancels_the_queries_in_flight(tmp_path: Path, postgres: Any) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    marker = "cancel_deployment"
    project = make_small_project(tmp_path, postgres, marker, marker, sleeping_models(marker))
    script = tmp_path / "served_flow.py"
    script.write_text(SERVED_FLOW)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(dbt_prefect.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    # The Prefect runner that serves the deployment; it runs each flow run in a process of its own.
    runner = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        with get_client(sync_client=True) as client:
            deployment = poll(
                lambda: _deployment(client, "dbt-cancel-deployment/cancel-test"), lambda d: d is not None, timeout=120
            )
            assert deployment is not None, "the runner never served the deployment"
            flow_run = client.create_flow_run_from_deployment(deployment.id, parameters={"project": str(project)})
            assert poll(lambda: both_sleeping(postgres, marker), bool, timeout=120), "the sleeping models never started"
            client.set_flow_run_state(flow_run.id, Cancelling(), force=True)
            cancelled = time.monotonic()
            assert poll(lambda: queries_of(postgres, marker), lambda q: q == [], timeout=10) == []
            assert time.monotonic() - cancelled < 10
            run = poll(lambda: client.read_flow_run(flow_run.id), lambda r: r.state_type.value == "CANCELLED", 30)
        assert state_of(run) == ("CANCELLED", "Cancelled"), message_of(run)
        runs = assert_nodes_closed(run.id)
        assert sorted(runs) == ["model quick", "model sleepy_a", "model sleepy_b"]
    finally:
        os.killpg(runner.pid, signal.SIGTERM)
        try:
            output, _ = runner.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, signal.SIGKILL)
            output, _ = runner.communicate(timeout=30)
        print(output[-5000:])


def _deployment(client: Any, name: str) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None
