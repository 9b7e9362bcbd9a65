"""The documentation's examples, run as a reader runs them: each file of docs/examples/ is
started as its own process (`python example.py`, `bash example.sh`) against the session's
Prefect server, in a private copy of the demo shop, and what it left on the server is read
back. The pages include these files (snippets), so a page cannot show an example that does
not work. tests/test_docs.py checks that every file there is run here.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterName,
    FlowRunFilterStartTime,
)
from prefect.client.schemas.sorting import FlowRunSort

from support.prefect_api import asset_events, logs, materializations, state_of, task_runs
from support.projects import REPO_ROOT, make_shop_copy
from test_runner import EXPECTED_BUILD_TASK_RUNS

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]

EXAMPLES = REPO_ROOT / "docs" / "examples"
VENV_BIN = Path(sys.executable).parent

# Every example this file runs; tests/test_docs.py checks that it names every file in EXAMPLES.
RUN_HERE = {
    "basic_flow.py",
    "retry_flow.py",
    "only_changed_flow.py",
    "lifecycle_hooks.py",
    "translator.py",
    "settings_flow.py",
    "orchestrator_flow.py",
    "caching_flow.py",
    "cli_build.sh",
    "cli_only_changed.sh",
}


def example_env(**extra: str) -> dict[str, str]:
    """The test session's environment (its Prefect server, telemetry off), with the venv's
    commands on PATH, as an activated environment has them."""
    env = {k: v for k, v in os.environ.items() if k not in ("DBT_PROJECT_DIR", "DBT_PROFILES_DIR", "CI")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run_example(name: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    source = EXAMPLES / name
    command = ["bash", "-e", str(source)] if name.endswith(".sh") else [sys.executable, str(source)]
    return subprocess.run(command, cwd=cwd, env=example_env(**env), capture_output=True, text=True, timeout=600)


def flow_runs_since(flow_name: str, since: dt.datetime) -> list[Any]:
    """The runs of a flow that started after `since`, oldest first."""
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)),
            sort=FlowRunSort.START_TIME_ASC,
        )


def flow_runs_printed(stdout: str) -> list[Any]:
    """The flow runs the CLI said it ran, in its order (other tests run flows of the same
    name at the same time)."""
    names = re.findall(r"in Prefect flow run '([^']+)'", stdout)
    with get_client(sync_client=True) as client:
        found = {
            run.name: run
            for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=names)))
        }
    assert sorted(found) == sorted(names), f"the CLI named flow runs {names}; the server holds {sorted(found)}"
    return [found[name] for name in names]


def only_run_since(flow_name: str, since: dt.datetime) -> Any:
    runs = flow_runs_since(flow_name, since)
    assert len(runs) == 1, f"expected one run of {flow_name} since {since}, found {[r.name for r in runs]}"
    return runs[0]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def analytics_project(tmp_path: Path) -> Path:
    """The demo shop as `analytics/` in `tmp_path`, the folder the examples name."""
    shop = make_shop_copy(tmp_path)
    return shop.rename(tmp_path / "analytics")


def ok(process: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert process.returncode == 0, f"exit {process.returncode}\n{process.stdout[-3000:]}\n{process.stderr[-3000:]}"
    return process


# -- the tutorial's flow ------------------------------------------------------------------
def test_basic_flow_builds_every_node_of_the_project_it_is_started_in(tmp_path: Path) -> None:
    shop = make_shop_copy(tmp_path)
    started = now()
    ok(run_example("basic_flow.py", shop))
    run = only_run_since("run-dbt", started)
    assert state_of(run) == ("COMPLETED", "Completed")
    assert sorted(r.name for r in task_runs(run.id)) == EXPECTED_BUILD_TASK_RUNS


def test_settings_flow_finds_the_project_and_profiles_it_names(tmp_path: Path) -> None:
    analytics_project(tmp_path)
    started = now()
    ok(run_example("settings_flow.py", tmp_path))
    run = only_run_since("run-dbt", started)
    assert state_of(run) == ("COMPLETED", "Completed")
    assert len(task_runs(run.id)) == 36


# -- how-to guides ------------------------------------------------------------------------
def test_retry_flow_reruns_only_the_failed_test_on_each_retry(tmp_path: Path) -> None:
    shop = make_shop_copy(tmp_path)
    # A singular test that always fails: the build fails, and so does every `dbt retry`.
    (shop / "tests" / "assert_always_fails.sql").write_text("select 1 as failing_row\n")
    started = now()
    process = run_example("retry_flow.py", shop)
    assert process.returncode == 1
    run = only_run_since("run-dbt", started)
    assert state_of(run) == ("FAILED", "Failed")
    assert run.run_count == 3
    names = [r.name for r in task_runs(run.id)]
    # The first attempt builds every node; the two retries rerun the failed test alone.
    assert names.count("test assert_always_fails") == 3
    assert sorted(set(names)) == sorted([*EXPECTED_BUILD_TASK_RUNS, "test assert_always_fails"])
    assert len(names) == 37 + 2


def test_only_changed_flow_builds_nothing_the_second_time(tmp_path: Path) -> None:
    shop = make_shop_copy(tmp_path)
    started = now()
    ok(run_example("only_changed_flow.py", shop))
    ok(run_example("only_changed_flow.py", shop))
    first, second = flow_runs_since("build-what-changed", started)
    assert len(task_runs(first.id)) == 36
    assert task_runs(second.id) == []
    assert (shop / "dbt-state" / "manifest.json").exists()
    lines = [log.message for log in logs(second.id)]
    assert any(
        line.startswith("only_changed: 36 nodes are unchanged since the last successful build") for line in lines
    )


def test_lifecycle_hooks_page_on_a_failed_critical_model_and_summarise_the_run(tmp_path: Path) -> None:
    shop = make_shop_copy(tmp_path)
    # orders is tagged critical; make it fail.
    orders = shop / "models" / "marts" / "orders.sql"
    orders.write_text("select * from a_table_that_does_not_exist\n")
    started = now()
    process = ok(run_example("lifecycle_hooks.py", shop))
    assert process.stdout.splitlines()[-1].startswith("error ")
    run = only_run_since("build-with-hooks", started)
    warnings = [log.message for log in logs(run.id) if log.level == 30]
    assert any(message.startswith("model.shop.orders failed: ") for message in warnings), warnings


def test_translator_gives_its_own_asset_keys_and_task_run_names(tmp_path: Path) -> None:
    shop = make_shop_copy(tmp_path)
    started = now()
    ok(run_example("translator.py", shop))
    run = only_run_since("build-with-my-keys", started)
    names = {r.name for r in task_runs(run.id)}
    assert "model: orders" in names and "seed: raw_orders" in names
    keys = set(materializations(asset_events(run.id)))
    assert "bigquery://shop/main_marts/orders" in keys
    assert all(key.startswith("bigquery://shop/") for key in keys), keys


def test_orchestrator_flow_builds_the_selection_and_prints_each_status(tmp_path: Path) -> None:
    project = analytics_project(tmp_path)
    started = now()
    process = ok(run_example("orchestrator_flow.py", tmp_path, DBT_PROFILES_DIR=str(project)))
    statuses = eval(process.stdout.strip().splitlines()[-1])  # the printed dict, {unique_id: status}
    assert statuses["model.shop.orders"] == "success"
    assert set(statuses.values()) == {"success"}
    run = only_run_since("daily", started)
    assert state_of(run) == ("COMPLETED", "Completed")
    assert {r.name for r in task_runs(run.id)} >= {"model orders", "model customers", "model product_revenue"}


def test_caching_flow_caches_every_cacheable_node_of_an_unchanged_second_build(tmp_path: Path) -> None:
    project = analytics_project(tmp_path)
    started = now()
    first = ok(run_example("caching_flow.py", tmp_path, DBT_PROFILES_DIR=str(project)))
    second = ok(run_example("caching_flow.py", tmp_path, DBT_PROFILES_DIR=str(project)))
    assert first.stdout.strip().splitlines()[-1].startswith("0 of ")
    cached, _, total = second.stdout.strip().splitlines()[-1].partition(" of ")
    assert int(cached) > 0
    runs = flow_runs_since("cached-build", started)
    assert len(runs) == 2
    states = {state_of(r) for r in task_runs(runs[1].id)}
    assert ("COMPLETED", "Cached") in states


# -- the command line ---------------------------------------------------------------------
def test_cli_build_builds_the_project_then_the_selection_in_named_flow_runs(tmp_path: Path) -> None:
    shop = make_shop_copy(tmp_path)
    shutil.rmtree(shop / "dbt_packages")  # the script's `dbt deps` installs the package
    process = ok(run_example("cli_build.sh", shop))
    assert "Done. PASS=38 WARN=0 ERROR=0 SKIP=0 NO-OP=0 TOTAL=38" in process.stdout
    with get_client(sync_client=True) as client:
        runs = {r.name: r for r in client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["shop"])))}
    first, selected = runs["first-build"], runs["orders-and-below"]
    assert state_of(first) == state_of(selected) == ("COMPLETED", "Completed")
    assert sorted(r.name for r in task_runs(first.id)) == EXPECTED_BUILD_TASK_RUNS
    names = {r.name for r in task_runs(selected.id)}
    assert {"model orders", "model customers", "model product_revenue"} <= names
    assert not any(name.startswith(("seed ", "model stg_")) for name in names), names


def test_cli_only_changed_builds_nothing_the_second_time(tmp_path: Path) -> None:
    shop = make_shop_copy(tmp_path)
    process = ok(run_example("cli_only_changed.sh", shop))
    done_lines = [line for line in process.stdout.splitlines() if line.startswith("Done. ")]
    assert len(done_lines) == 2
    assert done_lines[0] == "Done. PASS=38 WARN=0 ERROR=0 SKIP=0 NO-OP=0 TOTAL=38"
    first, second = flow_runs_printed(process.stdout)
    with get_client(sync_client=True) as client:
        assert {client.read_flow(run.flow_id).name for run in (first, second)} == {"shop"}
    assert len(task_runs(first.id)) == 36
    assert task_runs(second.id) == []
    assert (shop / ".dbt-state" / "manifest.json").exists()
