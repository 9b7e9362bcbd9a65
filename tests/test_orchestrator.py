"""PrefectDbtOrchestrator end to end: real dbt on PostgreSQL, a real dask.distributed
LocalCluster with worker processes, a real Prefect server; read back through the client."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from dbt_prefect import DbtBuildFailed, PrefectDbtRunnerFailure
from dbt_prefect import OrchestratorUsageError
from support.orchestration import dask_runner, orchestrate, worker_pids
from support.projects import make_pg_project, make_shop_copy
from support.prefect_api import (
    asset_events,
    by_name,
    events_of_flow_run,
    logs,
    materializations,
    message_of,
    related_assets,
    state_of,
    task_runs,
)

pytestmark = pytest.mark.usefixtures("prefect_server", "pg_secret_block")

SEEDS = ["seed raw_customers", "seed raw_orders"]
MODELS = ["model stg_customers", "model stg_orders", "model customers", "model order_totals",
          "model customer_value", "model flaky_counts"]
SNAPSHOTS = ["snapshot customers_snapshot"]
TESTS = ["test not_null_stg_customers_customer_id", "test unique_stg_customers_customer_id",
         "test unique_stg_orders_order_id", "test not_null_customers_customer_id"]
ALL_NODES = sorted(SEEDS + MODELS + SNAPSHOTS + TESTS)


def names(runs: list[Any]) -> list[str]:
    return sorted(run.name for run in runs)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, postgres: Any) -> Path:
    """One project copy (schema `orch`) shared by the green-path tests of this module."""
    return make_pg_project(tmp_path_factory.mktemp("orch"), postgres, "orch")


@pytest.fixture(scope="module")
def green(shop: Path, dask_cluster: Any) -> Any:
    return orchestrate(shop, dask_runner(dask_cluster))


# -- execution on the cluster ------------------------------------------------------------


def test_the_build_publishes_one_run_report_with_every_node(green: Any) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[green.flow_run_id]))
        )
    artifacts = {a.key: a for a in found}
    assert sorted(artifacts) == ["dbt-pg-shop-build", "dbt-pg-shop-build-nodes"]
    total = len(ALL_NODES) + len(green.result.hook_results)
    assert artifacts["dbt-pg-shop-build"].description == (
        f"`dbt build` in project pg_shop: PASS={total} WARN=0 ERROR=0 SKIP=0 NO-OP=0 TOTAL={total}"
    )
    table = artifacts["dbt-pg-shop-build-nodes"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert sorted(f"{row['resource_type']} {row['node']}" for row in rows) == ALL_NODES


def test_every_node_is_one_task_run_on_a_dask_worker_process(green: Any, dask_cluster: Any) -> None:
    assert green.state.is_completed(), green.error
    runs = task_runs(green.flow_run_id)
    assert names(runs) == ALL_NODES
    assert {state_of(run) for run in runs} == {("COMPLETED", "Completed")}
    # The ephemeral model is folded into its children.
    assert "model int_paid_orders" not in names(runs)
    pids = {int(r.worker.rsplit(":", 1)[1]) for r in green.result.results}
    assert pids <= worker_pids(dask_cluster)
    assert os.getpid() not in pids
    assert green.result.success


def test_a_child_starts_after_each_parent_ends(green: Any) -> None:
    runs = by_name(task_runs(green.flow_run_id))
    plan = green.orchestrator.last_plan.by_id()
    checked = 0
    for planned in plan.values():
        for parent_id in planned.waits_for:
            parent = runs[plan[parent_id].task_run_name]
            child = runs[planned.task_run_name]
            assert child.start_time >= parent.end_time, (planned.task_run_name, plan[parent_id].task_run_name)
            checked += 1
    assert checked == 20


def test_tests_run_right_after_their_model_and_gate_its_children(green: Any) -> None:
    plan = green.orchestrator.last_plan.by_id()
    by_task_name = {p.task_run_name: p for p in plan.values()}
    customers = by_task_name["model customers"]
    assert sorted(plan[u].task_run_name for u in customers.waits_for) == [
        "model stg_customers",
        "test not_null_stg_customers_customer_id",
        "test unique_stg_customers_customer_id",
    ]
    assert [plan[u].task_run_name for u in by_task_name["test unique_stg_orders_order_id"].waits_for] == [
        "model stg_orders"
    ]
    # The ephemeral int_paid_orders is folded away: order_totals hangs off stg_orders.
    assert sorted(plan[u].task_run_name for u in by_task_name["model order_totals"].waits_for) == [
        "model stg_orders", "test unique_stg_orders_order_id",
    ]


def test_the_nodes_built_the_relations_in_postgres(green: Any, postgres: Any) -> None:
    assert postgres.relations("orch") >= {
        "stg_customers", "stg_orders", "customers", "order_totals", "customer_value", "flaky_counts",
        "customers_snapshot",
    }
    assert postgres.relations("orch_raw") == {"raw_customers", "raw_orders"}
    assert postgres.query("select count(*) from orch.customer_value") == [(4,)]


# -- assets and logs, compared with the runner ----------------------------------------------


@pytest.fixture(scope="module")
def runner_build(shop: Path, green: Any) -> Any:
    """The runner's single `dbt build` of the same project, after the orchestrated one."""
    from prefect import flow
    from prefect.context import FlowRunContext

    from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings

    captured: dict[str, Any] = {}

    @flow(name="dbt-runner-for-comparison")
    def runner_flow() -> None:
        captured["flow_run_id"] = FlowRunContext.get().flow_run.id
        PrefectDbtRunner(settings=PrefectDbtSettings(project_dir=shop, profiles_dir=shop)).invoke(["build"])

    runner_flow()
    return captured["flow_run_id"]


def _normalised(line: str) -> str:
    line = re.sub(r"^\d+ of \d+ ", "", line.strip())
    # Timings and row counts differ between two runs ("[SELECT 4 in 0.05s]").
    line = re.sub(r"\[[^\]]*\]$", "[...]", line)
    return re.sub(r"\.{3,}", "...", line)


def test_node_logs_are_the_runners_lines(green: Any, runner_build: Any) -> None:
    def node_lines(flow_run_id: Any) -> dict[str, set[str]]:
        run_names = {run.id: run.name for run in task_runs(flow_run_id)}
        lines: dict[str, set[str]] = {}
        for log in logs(flow_run_id):
            if log.task_run_id in run_names and log.name == "prefect.task_runs" and "Finished in state" not in log.message:
                lines.setdefault(run_names[log.task_run_id], set()).add(_normalised(log.message))
        return lines

    runner_lines = node_lines(runner_build)
    orchestrator_lines = node_lines(green.flow_run_id)
    assert sorted(runner_lines) == sorted(orchestrator_lines) == ALL_NODES
    for name, lines in runner_lines.items():
        assert lines <= orchestrator_lines[name], name
    assert "OK created sql table model orch.customers ... [...]" in orchestrator_lines["model customers"]


def test_assets_are_the_runners(green: Any, runner_build: Any) -> None:
    ours = materializations(asset_events(green.flow_run_id))
    theirs = materializations(asset_events(runner_build))
    assert sorted(ours) == sorted(theirs) == sorted(
        [
            "postgres://postgres/orch_raw/raw_customers",
            "postgres://postgres/orch_raw/raw_orders",
            "postgres://postgres/orch/stg_customers",
            "postgres://postgres/orch/stg_orders",
            "postgres://postgres/orch/customers",
            "postgres://postgres/orch/order_totals",
            "postgres://postgres/orch/customer_value",
            "postgres://postgres/orch/flaky_counts",
            "postgres://postgres/orch/customers_snapshot",
        ]
    )
    for key, event in ours.items():
        other = theirs[key]
        assert related_assets(event) == related_assets(other), key
        assert dict(event.resource) == dict(other.resource), key
        assert sorted(event.payload) == sorted(other.payload), key
        assert event.payload["node_status"] == other.payload["node_status"] == "success"
    customer_value = ours["postgres://postgres/orch/customer_value"]
    assert related_assets(customer_value) == {
        "postgres://postgres/orch/customers", "postgres://postgres/orch/order_totals",
    }
    customers = ours["postgres://postgres/orch/customers"]
    assert customers.resource["prefect.resource.name"] == "postgres.orch.customers"
    assert customers.resource["prefect.asset.owners"] == '["analytics", "sales"]'


# -- failures and retries -------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory, postgres: Any, dask_cluster: Any) -> Any:
    project = make_pg_project(tmp_path_factory.mktemp("broken"), postgres, "broken")
    return orchestrate(project, dask_runner(dask_cluster), build={"vars": {"broken": True, "flaky": True}}, retries=1)


def test_a_failing_node_is_retried_alone_and_its_descendants_are_skipped(broken: Any) -> None:
    runs = by_name(task_runs(broken.flow_run_id))
    assert sorted(runs) == ALL_NODES
    failed = runs["model order_totals"]
    assert state_of(failed) == ("FAILED", "Failed")
    assert failed.run_count == 2
    assert "division by zero" in message_of(failed)
    skipped = runs["model customer_value"]
    assert state_of(skipped) == ("COMPLETED", "Skipped")
    assert message_of(skipped) == "Skipped because model order_totals finished with status error"
    # The flaky node failed once and passed on its retry; nothing else ran twice.
    assert state_of(runs["model flaky_counts"]) == ("COMPLETED", "Completed")
    assert runs["model flaky_counts"].run_count == 2
    for name, run in runs.items():
        if name not in ("model order_totals", "model flaky_counts", "model customer_value"):
            assert state_of(run) == ("COMPLETED", "Completed"), name
            assert run.run_count == 1, name


def test_a_failed_build_raises_the_runners_failure_summary(broken: Any) -> None:
    assert broken.state.is_failed()
    assert isinstance(broken.error, DbtBuildFailed)
    assert isinstance(broken.error, PrefectDbtRunnerFailure)
    lines = str(broken.error).splitlines()
    # The official headline, then the runner's summary of every failure.
    assert lines[0] == "dbt build failed for 1 node(s): model.pg_shop.order_totals"
    assert lines[1] == "Failures detected during invocation of dbt command 'build':"
    assert lines[2] == 'Model order_totals errored with message: "Database Error in model order_totals (models/marts/order_totals.sql)'
    assert len([line for line in lines if " with message: " in line]) == 1


def test_the_secret_from_the_block_is_in_no_file_and_no_log(broken: Any, postgres: Any, tmp_path_factory: Any) -> None:
    project_root = Path(broken.orchestrator.settings.project_dir)
    assert (project_root / "target" / "dbt-prefect-workers").is_dir()
    for path in project_root.rglob("*"):
        if path.is_file():
            assert postgres.password not in path.read_text(errors="ignore"), path
    for log in logs(broken.flow_run_id):
        assert postgres.password not in log.message


# -- strategies, selection, concurrency, other task runners --------------------------------


def test_deferred_tests_run_after_every_model_on_the_thread_pool_runner(tmp_path: Path, postgres: Any) -> None:
    project = make_pg_project(tmp_path, postgres, "deferred")
    outcome = orchestrate(
        project, ThreadPoolTaskRunner(max_workers=4), test_strategy="deferred",
    )
    assert outcome.state.is_completed(), outcome.error
    runs = by_name(task_runs(outcome.flow_run_id))
    assert sorted(runs) == ALL_NODES
    last_model_end = max(run.end_time for name, run in runs.items() if not name.startswith("test "))
    first_test_start = min(run.start_time for name, run in runs.items() if name.startswith("test "))
    assert first_test_start >= last_model_end
    # Nodes ran in this process: dbt invocations take turns on the runner's lock.
    assert {r.worker.rsplit(":", 1)[1] for r in outcome.result.results} == {str(os.getpid())}


def test_select_and_exclude_are_resolved_by_dbt_and_skip_runs_no_tests(shop: Path, green: Any, dask_cluster: Any) -> None:
    outcome = orchestrate(
        shop, dask_runner(dask_cluster),
        build={"select": "+customer_value", "exclude": ["stg_customers", "resource_type:seed"]},
        test_strategy="skip",
    )
    assert outcome.state.is_completed(), outcome.error
    assert names(task_runs(outcome.flow_run_id)) == [
        "model customer_value", "model customers", "model order_totals", "model stg_orders",
    ]


SEED_SECONDS = 2


def test_concurrency_caps_the_nodes_running_at_once_at_no_cost_per_node(
    tmp_path: Path, postgres: Any, dask_cluster: Any
) -> None:
    """A count caps the node tasks in flight from the flow itself: no Prefect concurrency
    limit, so no slot (no API call, no event) per node."""
    # The two seeds are independent and each takes SEED_SECONDS, so under a cap of 2 they
    # overlap however slow the machine is, and under a cap of 1 they must not.
    project = make_pg_project(tmp_path, postgres, "orch_cap")
    dbt_project = project / "dbt_project.yml"
    dbt_project.write_text(
        dbt_project.read_text().replace(
            "    +schema: raw\n", f'    +schema: raw\n    +pre-hook: "select pg_sleep({SEED_SECONDS})"\n'
        )
    )
    assert "pg_sleep" in dbt_project.read_text()
    for cap in (1, 2):
        outcome = orchestrate(project, dask_runner(dask_cluster), build={"select": "+customer_value"}, concurrency=cap)
        assert outcome.state.is_completed(), outcome.error
        runs = task_runs(outcome.flow_run_id)
        assert len(runs) == len(outcome.result.results) > 4
        # Never more than `cap` node task runs running at once, by their own start and end times.
        edges = sorted([(r.start_time, 1) for r in runs] + [(r.end_time, -1) for r in runs])
        running = peak = 0
        for _, step in edges:
            running += step
            peak = max(peak, running)
        assert peak == cap
        assert events_of_flow_run(outcome.flow_run_id, "prefect.concurrency-limit.") == []


def test_a_named_concurrency_limit_gives_each_node_one_slot_of_it(shop: Path, green: Any, dask_cluster: Any) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="dbt-nodes", limit=2, active=True))
    outcome = orchestrate(
        shop, dask_runner(dask_cluster), build={"select": "+stg_customers"}, test_strategy="skip", concurrency="dbt-nodes"
    )
    assert outcome.state.is_completed(), outcome.error
    acquired = [
        event
        for event in events_of_flow_run(outcome.flow_run_id, "prefect.concurrency-limit.acquired")
        if event.resource.get("prefect.resource.name") == "dbt-nodes"
    ]
    assert len(acquired) == len(outcome.result.results) == 2


def test_on_duckdb_nodes_take_turns_in_the_flow_process_take_no_slot_and_say_why(
    tmp_path: Path, dask_cluster: Any
) -> None:
    """DuckDB allows one writing process per file: the flow's Dask runner and concurrency
    do not apply, a warning on the flow run says so, and no node pays for a concurrency slot."""
    project = make_shop_copy(tmp_path)
    outcome = orchestrate(
        project, dask_runner(dask_cluster), build={"select": "+stg_customers"}, test_strategy="skip", concurrency=2
    )
    assert outcome.state.is_completed(), outcome.error
    flow_lines = [line for line in logs(outcome.flow_run_id) if line.task_run_id is None]
    assert [line.message for line in flow_lines if line.level == logging.WARNING] == [
        "dbt-prefect runs the nodes of this DuckDB project one at a time in the flow's process: DuckDB allows one "
        "writing process per database file, so concurrency=2 and the flow's DaskTaskRunner do not apply"
    ]
    assert {r.worker for r in outcome.result.results} == {f"{socket.gethostname()}:{os.getpid()}"}
    assert sorted(outcome.result) == ["model.shop.stg_customers", "seed.shop.raw_customers"]
    assert events_of_flow_run(outcome.flow_run_id, "prefect.concurrency-limit.") == []


def test_an_unknown_concurrency_limit_name_is_an_error(shop: Path) -> None:
    outcome = orchestrate(shop, ThreadPoolTaskRunner(), concurrency="no-such-limit")
    assert isinstance(outcome.error, OrchestratorUsageError)
    assert "no Prefect global concurrency limit named 'no-such-limit'" in str(outcome.error)
    assert task_runs(outcome.flow_run_id) == []


def test_run_build_outside_a_flow_says_to_use_a_flow(shop: Path) -> None:
    from dbt_prefect import PrefectDbtSettings
    from dbt_prefect import PrefectDbtOrchestrator

    with pytest.raises(OrchestratorUsageError, match="ExecutionMode.PER_NODE must be called inside a Prefect flow"):
        PrefectDbtOrchestrator(
            settings=PrefectDbtSettings(project_dir=shop, profiles_dir=shop), execution_mode="per_node"
        ).run_build()


def test_a_shipped_project_runs_without_the_project_files_on_the_workers(
    tmp_path: Path, postgres: Any, dask_cluster: Any
) -> None:
    project = make_pg_project(tmp_path, postgres, "shipped")
    outcome = orchestrate(project, dask_runner(dask_cluster), build={"select": "+order_totals"}, ship_project=True)
    assert outcome.state.is_completed(), outcome.error
    assert names(task_runs(outcome.flow_run_id)) == [
        "model order_totals", "model stg_orders", "seed raw_orders", "test unique_stg_orders_order_id",
    ]
    # The workers ran a copy: nothing was written into the project directory.
    assert not (project / "target" / "dbt-prefect-workers").exists()
    assert postgres.query("select count(*) from shipped.order_totals") == [(3,)]


# -- isolation ------------------------------------------------------------------------------


def test_two_orchestrated_builds_of_different_projects_in_parallel_do_not_interfere(
    tmp_path: Path, postgres: Any, dask_cluster: Any
) -> None:
    first = make_pg_project(tmp_path / "a", postgres, "par_a")
    second = make_pg_project(tmp_path / "b", postgres, "par_b", name="pg_other")
    outcomes: dict[str, Any] = {}

    def run(key: str, project: Path, build: dict[str, Any]) -> None:
        outcomes[key] = orchestrate(project, dask_runner(dask_cluster), build=build, raise_on_failure=False)

    threads = [
        threading.Thread(target=run, args=("a", first, {})),
        threading.Thread(target=run, args=("b", second, {"vars": {"broken": True}})),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    a, b = outcomes["a"], outcomes["b"]
    assert a.state.is_completed(), a.error
    assert b.state.is_completed(), b.error  # raise_on_failure=False
    runs_a, runs_b = by_name(task_runs(a.flow_run_id)), by_name(task_runs(b.flow_run_id))
    assert sorted(runs_a) == sorted(runs_b) == ALL_NODES
    assert {state_of(r) for r in runs_a.values()} == {("COMPLETED", "Completed")}
    assert state_of(runs_b["model order_totals"]) == ("FAILED", "Failed")
    assert state_of(runs_b["model customer_value"]) == ("COMPLETED", "Skipped")
    assert not b.result.success and a.result.success
    assert {r.node.unique_id.split(".")[1] for r in a.result.results} == {"pg_shop"}
    assert {r.node.unique_id.split(".")[1] for r in b.result.results} == {"pg_other"}
    assert "customer_value" in postgres.relations("par_a")
    assert "customer_value" not in postgres.relations("par_b")
    assert "order_totals" not in postgres.relations("par_b")
