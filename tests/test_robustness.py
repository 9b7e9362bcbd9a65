"""Every task run ends terminal whatever happens to dbt; concurrent runners stay apart."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from dbt_common.events.base_types import EventLevel
from prefect import flow
from prefect.context import FlowRunContext

from dbt_prefect import DbtCommandFailed, PrefectDbtRunner, PrefectDbtSettings, PrefectDbtRunnerFailure
from support.prefect_api import by_name, logs, message_of, state_of, task_runs

from support.projects import REPO_ROOT, make_shop_copy

pytestmark = pytest.mark.usefixtures("prefect_server")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def runner_for(project: Path, **kwargs: Any) -> PrefectDbtRunner:
    settings = kwargs.pop("settings", None) or PrefectDbtSettings(project_dir=project, profiles_dir=project)
    return PrefectDbtRunner(settings=settings, **kwargs)


def test_a_callback_that_fails_a_node_leaves_its_task_run_in_dbts_final_state(shop_project: Path) -> None:
    def break_orders(event: Any) -> None:
        if event.info.name == "NodeFinished" and event.data.node_info.unique_id == "model.shop.orders":
            raise RuntimeError("audit hook is down")

    seen: dict[str, Any] = {}

    @flow
    def with_broken_callback() -> None:
        try:
            runner_for(shop_project).invoke(["build"], callbacks=[break_orders])
        except PrefectDbtRunnerFailure as exc:
            seen["error"] = str(exc)
        seen["runs"] = task_runs(FlowRunContext.get().flow_run.id)

    with_broken_callback()
    runs = by_name(seen["runs"])
    assert {run.state_type.value for run in seen["runs"]} <= TERMINAL
    assert state_of(runs["model orders"]) == ("FAILED", "Failed")
    assert "audit hook is down" in message_of(runs["model orders"])
    assert 'Model orders errored with message: "Exception on worker thread. audit hook is down"' in seen["error"]
    assert state_of(runs["model customers"]) == ("COMPLETED", "Skipped")


def test_an_interrupted_run_leaves_no_task_run_open(shop_project: Path) -> None:
    process = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "scripts" / "interrupted_flow.py"), str(shop_project)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PREFECT_LOGGING_LEVEL": "ERROR"},
    )
    assert process.returncode != 0
    flow_run_id = UUID(process.stdout.splitlines()[0].strip())
    # Read once, no waiting: invoke() had recorded every task run before the signal ended the flow.
    runs = by_name(task_runs(flow_run_id))
    assert "model orders" in runs, process.stdout[-3000:] + process.stderr[-6000:]
    assert {run.state_type.value for run in runs.values()} <= TERMINAL
    # SIGTERM reaches dbt as its own cancel path (runner/cancellation.py), which races the
    # node's own query: dbt reports it errored because its query was cancelled (Failed),
    # or succeeded because the query ended first (Completed), or never reports it (we close
    # it as Crashed).
    assert state_of(runs["model orders"]) in {("CRASHED", "Crashed"), ("FAILED", "Failed"), ("COMPLETED", "Completed")}
    if state_of(runs["model orders"])[0] == "CRASHED":
        assert message_of(runs["model orders"]) == "dbt stopped before this node finished"
    assert all(run.state_name != "Running" for run in runs.values())
    assert state_of(runs["seed raw_orders"]) == ("COMPLETED", "Completed")


def test_fail_fast_leaves_every_task_run_terminal(shop_project: Path) -> None:
    seen: dict[str, Any] = {}

    @flow
    def fail_fast() -> None:
        runner = runner_for(shop_project, raise_on_failure=False)
        try:
            seen["result"] = runner.invoke(["build", "--fail-fast", "--vars", "{fail_demo_test: true}"])
        except DbtCommandFailed as exc:
            # dbt-duckdb sometimes stops the whole run when fail-fast closes the shared
            # connection under another thread ("Connection already closed"): dbt's own error.
            assert "Connection already closed" in str(exc)
            seen["result"] = None
        seen["runs"] = task_runs(FlowRunContext.get().flow_run.id)
        seen["report"] = runner.last_report

    fail_fast()
    assert seen["result"] is None or seen["result"].success is False
    # Every task run, those closed after dbt returned included, is in the run report, in its state's words.
    reported = {node.task_run_name: node.status for node in seen["report"].nodes}
    assert set(reported) == {run.name for run in seen["runs"]}
    states = Counter(run.state_type.value for run in seen["runs"])
    assert set(states) <= TERMINAL
    assert states["FAILED"] >= 1
    assert state_of(by_name(seen["runs"])["test assert_demo_failure"]) == ("FAILED", "Failed")


def test_two_runners_in_threads_keep_their_own_task_runs_and_logs(tmp_path: Path) -> None:
    first = make_shop_copy(tmp_path / "first")
    second = make_shop_copy(tmp_path / "second")
    # Tell the projects apart by what they build.
    (second / "models" / "marts" / "second_only.sql").write_text("select 1 as id\n")
    flow_runs: dict[str, UUID] = {}
    errors: list[BaseException] = []

    def build(label: str, project: Path) -> None:
        @flow(name=f"isolation-{label}")
        def isolated() -> None:
            flow_runs[label] = FlowRunContext.get().flow_run.id
            runner_for(project).invoke(["build"])

        try:
            isolated()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=build, args=item) for item in (("first", first), ("second", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    first_names = sorted(run.name for run in task_runs(flow_runs["first"]))
    second_names = sorted(run.name for run in task_runs(flow_runs["second"]))
    assert len(first_names) == 36 and len(set(first_names)) == 36
    assert sorted(set(second_names) - set(first_names)) == ["model second_only"]
    assert len(second_names) == 37 and len(set(second_names)) == 37
    first_logs = [record.message for record in logs(flow_runs["first"])]
    second_logs = [record.message for record in logs(flow_runs["second"])]
    assert any("main_marts.second_only" in m for m in second_logs)
    assert not any("second_only" in m for m in first_logs)
    assert sum(m.startswith("Found 10 models") for m in first_logs) == 1
    assert sum(m.startswith("Found 11 models") for m in second_logs) == 1


def test_dbt_log_level_error_keeps_dbts_info_lines_out_of_prefect(shop_project: Path) -> None:
    seen: dict[str, UUID] = {}

    @flow
    def quiet() -> None:
        seen["id"] = FlowRunContext.get().flow_run.id
        settings = PrefectDbtSettings(project_dir=shop_project, profiles_dir=shop_project, log_level=EventLevel.ERROR)
        runner_for(shop_project, settings=settings, raise_on_failure=False).invoke(
            ["build", "--select", "+product_revenue+", "--vars", "{fail_demo_test: true}"]
        )

    quiet()
    dbt_records = [r for r in logs(seen["id"]) if r.name in ("prefect.task_runs", "prefect.flow_runs") and "Finished in state" not in r.message and "Beginning flow run" not in r.message and "View at" not in r.message]
    assert dbt_records, "the failing test's error lines must still reach Prefect"
    assert {r.level for r in dbt_records} == {40}
    assert any("FAIL 10 assert_demo_failure" in r.message for r in dbt_records)


def test_log_level_flag_wins_over_settings(shop_project: Path) -> None:
    seen: dict[str, UUID] = {}

    @flow
    def flagged() -> None:
        seen["id"] = FlowRunContext.get().flow_run.id
        settings = PrefectDbtSettings(project_dir=shop_project, profiles_dir=shop_project, log_level="info")
        runner_for(shop_project, settings=settings).invoke(["seed", "--log-level", "error"])

    flagged()
    messages = [r.message for r in logs(seen["id"])]
    assert not any("loaded seed file" in m for m in messages)
    assert not any(m.startswith("Found ") for m in messages)


def test_errors_in_the_recorder_are_counted_and_summarised_and_the_run_goes_on(
    shop_project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from dbt_prefect import DbtPrefectTranslator

    class BrokenForMarts(DbtPrefectTranslator):
        def materialization_metadata(self, node: Any, metadata: Any) -> dict[str, Any]:
            if node.name in ("orders", "customers"):
                raise RuntimeError(f"no metadata for {node.name}")
            return super().materialization_metadata(node, metadata)

    seen: dict[str, Any] = {}

    @flow
    def broken_translator() -> None:
        seen["result"] = runner_for(shop_project, translator=BrokenForMarts()).invoke(["build"])
        seen["runs"] = task_runs(FlowRunContext.get().flow_run.id)

    with caplog.at_level("WARNING", logger="dbt_prefect"):
        broken_translator()
    assert seen["result"].success is True
    runs = by_name(seen["runs"])
    assert {run.state_type.value for run in runs.values()} == {"COMPLETED"}
    assert state_of(runs["model customers"]) == ("COMPLETED", "Completed")
    summaries = [r.getMessage() for r in caplog.records if "of this run" in r.getMessage()]
    assert summaries == ["dbt-prefect could not process 2 dbt event(s) of this run: 2 x RuntimeError in NodeFinished"]
