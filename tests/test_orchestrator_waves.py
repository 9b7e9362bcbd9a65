"""PrefectDbtOrchestrator per wave (the official default) on DuckDB: real dbt, a real
Prefect server, read back through the client. The reference is PrefectDbtRunner's
`dbt build` of the same project: the same task runs, states and asset events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dbt.cli.main import dbtRunner
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.context import FlowRunContext

from dbt_prefect import (
    BuildPlan,
    CacheConfig,
    DbtBuildFailed,
    ExecutionMode,
    OrchestratorUsageError,
    PrefectDbtOrchestrator,
    PrefectDbtRunner,
    PrefectDbtSettings,
    TestStrategy,
)
from support.prefect_api import asset_events, by_name, materializations, state_of, task_runs
from support.projects import make_shop_copy

pytestmark = pytest.mark.usefixtures("prefect_server")


def settings_for(project: Path) -> PrefectDbtSettings:
    return PrefectDbtSettings(project_dir=project, profiles_dir=project)


def in_flow(work: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    @flow(name="dbt-orchestrator-waves")
    def waves_flow() -> None:
        seen["flow_run_id"] = FlowRunContext.get().flow_run.id
        try:
            seen["result"] = work()
        except Exception as exc:
            seen["error"] = exc
        seen["events"] = asset_events(seen["flow_run_id"])

    waves_flow()
    return seen


@pytest.fixture(scope="module")
def reference_and_waves(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any], Path]:
    reference_project = make_shop_copy(tmp_path_factory.mktemp("reference"))
    waves_project = make_shop_copy(tmp_path_factory.mktemp("waves"))
    reference = in_flow(
        lambda: PrefectDbtRunner(settings=settings_for(reference_project), raise_on_failure=False).invoke(["build"])
    )
    waves = in_flow(lambda: PrefectDbtOrchestrator(settings=settings_for(waves_project)).run_build())
    return reference, waves, waves_project


def test_per_wave_is_the_default_and_each_node_is_the_task_run_dbt_build_gives(reference_and_waves: Any) -> None:
    reference, waves, _ = reference_and_waves
    assert "error" not in waves, waves.get("error")
    expected = {name: state_of(run) for name, run in by_name(task_runs(reference["flow_run_id"])).items()}
    got = {name: state_of(run) for name, run in by_name(task_runs(waves["flow_run_id"])).items()}
    # The runner also shows the project's on-run-start/end hooks as flow-level logs, not task runs.
    assert got == expected
    assert len(got) == 36


def artifacts_of(flow_run_id: Any) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def test_the_build_publishes_the_runners_report_with_dbts_counts(reference_and_waves: Any) -> None:
    reference, waves, _ = reference_and_waves
    expected = artifacts_of(reference["flow_run_id"])
    got = artifacts_of(waves["flow_run_id"])
    assert sorted(got) == sorted(expected) == ["dbt-shop-build", "dbt-shop-build-nodes"]
    # The same closing counts as the runner's single `dbt build`, project hooks included.
    assert got["dbt-shop-build"].description == expected["dbt-shop-build"].description
    assert got["dbt-shop-build"].description.endswith("PASS=38 WARN=0 ERROR=0 SKIP=0 NO-OP=0 TOTAL=38")


def test_the_results_dict_has_the_official_format(reference_and_waves: Any) -> None:
    _, waves, _ = reference_and_waves
    result = waves["result"]
    assert result.success
    assert set(result) == {r.unique_id for r in result.results}
    assert {r["status"] for r in result.values()} == {"success"}
    orders = result["model.shop.orders"]
    assert set(orders) == {"status", "timing", "invocation", "dbt_status", "task_run_id"}
    assert set(orders["timing"]) == {"started_at", "completed_at", "duration_seconds", "execution_time"}
    assert orders["invocation"]["command"] == "build"
    assert "model.shop.orders" in orders["invocation"]["args"]
    tests = [uid for uid in result if uid.startswith("test.")]
    assert len(tests) == 22
    assert {result[uid]["dbt_status"] for uid in tests} == {"pass"}
    unit = result["unit_test.shop.customers.test_customers_segments_and_lifetime_value"]
    assert (unit["status"], unit["dbt_status"]) == ("success", "pass")


def test_assets_match_the_runners(reference_and_waves: Any) -> None:
    reference, waves, _ = reference_and_waves
    expected = materializations(reference["events"])
    got = materializations(waves["events"])
    assert sorted(got) == sorted(expected)
    for key, event in got.items():
        assert sorted(r.id for r in event.related if r.role == "asset") == sorted(
            r.id for r in expected[key].related if r.role == "asset"
        ), key


def test_plan_previews_the_waves_without_running_anything(tmp_path: Path) -> None:
    project = make_shop_copy(tmp_path)
    plan = PrefectDbtOrchestrator(settings=settings_for(project)).plan(select="+orders")
    assert isinstance(plan, BuildPlan)
    assert plan.node_count == sum(len(w.nodes) for w in plan.waves)
    assert plan.estimated_parallelism == max(len(w.nodes) for w in plan.waves)
    assert plan.cache_predictions is None and plan.skipped_nodes == {}
    text = str(plan)
    first = text.splitlines()[0]
    assert first == (
        f"BuildPlan: {plan.node_count} node(s) in {len(plan.waves)} wave(s)  |  max parallelism = "
        f"{plan.estimated_parallelism}"
    )
    assert "  Wave 0 (" in text
    assert "    - seed.shop.raw_orders [seed, seed]" in text
    assert "    - model.shop.orders [model, table]" in text
    assert not (project / "target" / "run_results.json").exists()


def test_bad_constructor_arguments_fail_at_once_with_the_fix() -> None:
    with pytest.raises(OrchestratorUsageError, match=r"retries=2 needs per-node execution.*ExecutionMode.PER_NODE"):
        PrefectDbtOrchestrator(retries=2)
    with pytest.raises(ValueError, match=r"cache= needs per-node execution"):
        PrefectDbtOrchestrator(cache=CacheConfig())
    with pytest.raises(OrchestratorUsageError, match=r"execution_mode must be one of ExecutionMode.PER_NODE"):
        PrefectDbtOrchestrator(execution_mode="sometimes")
    with pytest.raises(OrchestratorUsageError, match=r"test_strategy must be one of TestStrategy.IMMEDIATE"):
        PrefectDbtOrchestrator(test_strategy="later")
    with pytest.raises(OrchestratorUsageError, match=r"dbt Cloud executor is not supported"):
        PrefectDbtOrchestrator(executor=object())
    assert PrefectDbtOrchestrator(execution_mode=ExecutionMode.PER_NODE, retries=2).retries == 2
    assert PrefectDbtOrchestrator(test_strategy=TestStrategy.SKIP).test_strategy is TestStrategy.SKIP


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--select", "orders"],
            "extra_cli_args cannot contain --select: the orchestrator selects the nodes itself: "
            "use run_build(select=...)",
        ),
        (["-s", "orders"], "extra_cli_args cannot contain --select"),
        (["--target=prod"], "extra_cli_args cannot contain --target: use run_build(target='...') instead"),
        (["--threads", "8"], "extra_cli_args cannot contain --threads: use PrefectDbtOrchestrator(threads=N) instead"),
        (["--no-favor-state"], "extra_cli_args cannot contain --favor-state"),
        (["--profiles-dir", "/x"], "extra_cli_args cannot contain --profiles-dir"),
    ],
)
def test_extra_cli_args_refuse_the_flags_the_orchestrator_manages(
    tmp_path: Path, args: list[str], message: str
) -> None:
    project = make_shop_copy(tmp_path)
    with pytest.raises(OrchestratorUsageError) as raised:
        PrefectDbtOrchestrator(settings=settings_for(project)).run_build(extra_cli_args=args)
    assert str(raised.value).startswith(message)


def dbt_statuses(project: Path) -> dict[str, str]:
    """dbt's own `dbt build` of the project: each node's status, the reference."""
    result = dbtRunner().invoke(
        ["build", "--project-dir", str(project), "--profiles-dir", str(project), "--log-level", "none"]
    )
    return {
        r.node.unique_id: str(r.status.value if hasattr(r.status, "value") else r.status)
        for r in result.result.results
        if not r.node.unique_id.startswith("operation.")
    }


def break_stg_products(project: Path) -> None:
    (project / "models" / "staging" / "stg_products.sql").write_text("select * from no_such_table\n")


def test_a_failure_errors_its_node_skips_what_dbt_build_skips_and_raises_after_the_results(tmp_path: Path) -> None:
    reference_project = make_shop_copy(tmp_path / "reference")
    break_stg_products(reference_project)
    expected = dbt_statuses(reference_project)
    project = make_shop_copy(tmp_path / "waves")
    break_stg_products(project)
    seen = in_flow(lambda: PrefectDbtOrchestrator(settings=settings_for(project)).run_build())
    error = seen["error"]
    assert isinstance(error, DbtBuildFailed)
    results = error.results
    assert {uid: r["dbt_status"] for uid, r in results.items()} == expected
    assert results["model.shop.stg_products"]["status"] == "error"
    assert "no_such_table" in results["model.shop.stg_products"]["error"]["message"]
    assert results["model.shop.stg_products"]["error"]["type"] == "DbtNodeError"
    skipped = results["model.shop.product_revenue"]
    assert skipped["status"] == "skipped"
    assert skipped["failed_upstream"] == ["model.shop.stg_products"]
    assert skipped["reason"] == "Skipped because model stg_products finished with status error"
    assert "timing" not in skipped and "invocation" not in skipped
    assert error.failed_node_ids == ["model.shop.stg_products"]
    assert sorted(error.skipped_node_ids) == sorted(uid for uid, s in expected.items() if s == "skipped")
    assert str(error).startswith("dbt build failed for 1 node(s): model.shop.stg_products\n")
    runs = by_name(task_runs(seen["flow_run_id"]))
    assert state_of(runs["model stg_products"])[0] == "FAILED"
    assert state_of(runs["model product_revenue"]) == ("COMPLETED", "Skipped")


def test_raise_on_failure_false_returns_the_results(tmp_path: Path) -> None:
    project = make_shop_copy(tmp_path)
    break_stg_products(project)
    seen = in_flow(
        lambda: PrefectDbtOrchestrator(settings=settings_for(project), raise_on_failure=False).run_build(
            select="+product_revenue"
        )
    )
    assert "error" not in seen
    result = seen["result"]
    assert not result.success
    assert result["model.shop.stg_products"]["status"] == "error"
    assert result["model.shop.product_revenue"]["status"] == "skipped"
    # stg_products no longer reads raw_products; raw_orders feeds product_revenue's other side.
    assert result["seed.shop.raw_orders"]["status"] == "success"
