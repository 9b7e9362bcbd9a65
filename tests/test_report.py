"""The run report: one markdown and one table artifact per invoke, read back through the client."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.context import FlowRunContext, TaskRunContext

from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings
from dbt_prefect.runner.report import (
    MAX_MARKDOWN_NODES,
    NodeReport,
    RunReport,
    artifact_key,
    render_markdown,
)

from support.projects import make_shop_copy

pytestmark = pytest.mark.usefixtures("prefect_server")


def runner_for(project: Path, **kwargs: Any) -> PrefectDbtRunner:
    return PrefectDbtRunner(settings=PrefectDbtSettings(project_dir=project, profiles_dir=project), **kwargs)


def artifacts_of(flow_run_id: Any) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


def masked(text: str) -> list[str]:
    return [re.sub(r"\| \d+\.\d\d \|", "| T |", line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def several_invokes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One flow run, five invokes: the report of each, or none, lands on the flow (or task) run."""
    project = make_shop_copy(tmp_path_factory.mktemp("report"))
    seen: dict[str, Any] = {}

    @task(name="freshness")
    def freshness() -> None:
        seen["task_run_id"] = TaskRunContext.get().task_run.id
        runner = runner_for(project)
        runner.invoke(["source", "freshness"])
        seen["freshness_report"] = runner.last_report

    @flow(name="report-test")
    def several() -> None:
        seen["flow_run_id"] = FlowRunContext.get().flow_run.id
        runner = runner_for(project)
        runner.invoke(["seed"])
        seen["seed_report"] = runner.last_report
        quiet = runner_for(project, create_summary_artifact=False)
        quiet.invoke(["run", "--select", "stg_orders"])
        seen["quiet_report"] = quiet.last_report
        runner_for(project, disable_assets=True).invoke(["run", "--select", "stg_products"])
        runner.invoke(["ls", "--resource-type", "model"])
        seen["ls_report"] = runner.last_report
        freshness()

    state = several(return_state=True)
    assert state.is_completed(), state.message
    seen["artifacts"] = {a.key: a for a in artifacts_of(seen["flow_run_id"])}
    return seen


def test_one_markdown_and_one_table_artifact_per_invoke_under_stable_keys(several_invokes: dict[str, Any]) -> None:
    artifacts = several_invokes["artifacts"]
    # No report for `ls` (it runs no node) nor for the runner with create_summary_artifact=False.
    assert sorted(artifacts) == [
        "dbt-shop-run",
        "dbt-shop-run-nodes",
        "dbt-shop-seed",
        "dbt-shop-seed-nodes",
        "dbt-shop-source-freshness",
        "dbt-shop-source-freshness-nodes",
    ]
    assert {key: a.type for key, a in artifacts.items()} == {
        key: "table" if key.endswith("-nodes") else "markdown" for key in artifacts
    }
    assert several_invokes["quiet_report"] is None
    assert several_invokes["ls_report"] is None
    assert several_invokes["seed_report"].key == "dbt-shop-seed"


def test_the_markdown_report_has_counts_slowest_nodes_and_a_node_table(several_invokes: dict[str, Any]) -> None:
    seed = several_invokes["artifacts"]["dbt-shop-seed"]
    assert seed.description == "`dbt seed` in project shop: PASS=5 WARN=0 ERROR=0 SKIP=0 NO-OP=0 TOTAL=5"
    lines = masked(seed.data)
    slowest = lines[12:17]
    assert lines[:12] + lines[17:] == [
        "# dbt seed · shop",
        "",
        "`dbt seed`",
        "",
        "**PASS=5 WARN=0 ERROR=0 SKIP=0 NO-OP=0 TOTAL=5**",
        "",
        "| Status | Nodes |",
        "| :-- | --: |",
        "| success | 3 |",
        "",
        "## Slowest nodes",
        "",
        "",
        "## Nodes (3)",
        "",
        "| Node | Type | Status | Duration (s) | Rows affected | Asset key |",
        "| :-- | :-- | :-- | --: | --: | :-- |",
        "| raw_customers | seed | success | T | 21 | `duckdb://shop/main_raw/raw_customers` |",
        "| raw_orders | seed | success | T | 30 | `duckdb://shop/main_raw/raw_orders` |",
        "| raw_products | seed | success | T | 10 | `duckdb://shop/main_raw/raw_products` |",
    ]
    assert slowest[:2] == ["| Node | Status | Duration (s) |", "| :-- | :-- | --: |"]
    assert sorted(slowest[2:]) == [
        "| seed raw_customers | success | T |",
        "| seed raw_orders | success | T |",
        "| seed raw_products | success | T |",
    ]
    durations = [float(d) for d in re.findall(r"\| (\d+\.\d\d) \|$", "\n".join(seed.data.splitlines()[14:17]), re.M)]
    assert durations == sorted(durations, reverse=True)


def test_disabled_assets_leave_the_asset_column_empty(several_invokes: dict[str, Any]) -> None:
    rows = json.loads(several_invokes["artifacts"]["dbt-shop-run-nodes"].data)
    assert [(r["node"], r["status"], r["asset_key"]) for r in rows] == [("stg_products", "success", None)]
    assert "| stg_products | model | success | T |  |  |" in masked(several_invokes["artifacts"]["dbt-shop-run"].data)


def test_invoked_in_a_task_the_report_belongs_to_the_task_run(several_invokes: dict[str, Any]) -> None:
    report = several_invokes["artifacts"]["dbt-shop-source-freshness"]
    table = several_invokes["artifacts"]["dbt-shop-source-freshness-nodes"]
    assert report.task_run_id == table.task_run_id == several_invokes["task_run_id"]
    assert report.flow_run_id == several_invokes["flow_run_id"]
    rows = json.loads(table.data)
    assert [(r["resource_type"], r["node"], r["status"], r["asset_key"]) for r in rows] == [
        ("source", "payments", "pass", "duckdb://shop/payments_app/payments")
    ]
    assert report.data.startswith("# dbt source freshness · shop\n\n`dbt source freshness`\n")


# -- rendering, without dbt ----------------------------------------------------------
@pytest.mark.parametrize(
    ("project", "command", "key"),
    [
        ("shop", "build", "dbt-shop-build"),
        ("jaffle_shop", "source freshness", "dbt-jaffle-shop-source-freshness"),
        ("My.Project__2", "docs generate", "dbt-my-project-2-docs-generate"),
        ("shop", "run-operation", "dbt-shop-run-operation"),
    ],
)
def test_artifact_keys_are_valid_prefect_keys(project: str, command: str, key: str) -> None:
    assert artifact_key(project, command) == key
    ArtifactCreate(key=key)  # Prefect's own validation: lowercase letters, digits and dashes
    ArtifactCreate(key=f"{key}-nodes")


def test_failure_messages_and_odd_names_keep_the_markdown_intact() -> None:
    message = "Database Error in model a|b\n  syntax error at ```\nline 3"
    nodes = [
        NodeReport(
            "model.p.a|b", "a|b", "model", "error", message, 0.5, None, "duckdb://db/s/a|b", "models/a.sql",
            task_run_name="model a|b",
        ),
        NodeReport("test.p.t", "t", "test", "warn", "Got 1 result, configured to warn if != 0", 0.25, task_run_name="test t"),
        NodeReport(
            "model.p.c", "c", "model", "skipped", "Skipped because model a|b finished with status error",
            task_run_name="model c",
        ),
    ]
    text = render_markdown(RunReport(project="p", command="build", args=("build",), nodes=nodes))
    assert "**PASS=0 WARN=1 ERROR=1 SKIP=1 NO-OP=0 TOTAL=3**" in text
    assert "**model a|b** · error · `models/a.sql`\n\n````text\n" + message + "\n````\n" in text
    assert "## Warnings (1)\n\n**test t** · warn\n\n```text\nGot 1 result, configured to warn if != 0\n```" in text
    assert "| a\\|b | model | error | 0.50 |  | `duckdb://db/s/a\\|b` |" in text
    assert "| c | model | skipped |  |  |  |" in text
    # Skipped nodes did not run: they are not among the slowest.
    slowest = text.split("## Slowest nodes")[1].split("## Nodes")[0]
    assert "| model a\\|b | error | 0.50 |\n| test t | warn | 0.25 |" in slowest
    assert "model c" not in slowest


def test_the_markdown_lists_at_most_500_nodes_and_the_slowest_10() -> None:
    nodes = [
        NodeReport(f"test.p.t{i}", f"t{i:04d}", "test", "pass", "", i / 1000, task_run_name=f"test t{i:04d}")
        for i in range(MAX_MARKDOWN_NODES + 20)
    ]
    report = RunReport(project="p", command="test", nodes=nodes)
    text = render_markdown(report)
    table = text.split("## Nodes (520)")[1]
    assert table.count("| test | pass |") == MAX_MARKDOWN_NODES
    assert table.rstrip().endswith("… and 20 more nodes: see the table artifact `dbt-p-test-nodes`.")
    slowest = text.split("## Slowest nodes")[1].split("## Nodes")[0]
    assert re.findall(r"\| test (t\d+) \|", slowest) == [f"t{i:04d}" for i in range(519, 509, -1)]
