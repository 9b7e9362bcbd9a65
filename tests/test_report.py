"""The run report: one markdown and one table artifact per invoke, read back through the client."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.context import FlowRunContext, TaskRunContext
from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter, EventOccurredFilter

from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings
from dbt_prefect.runner.report import (
    MAX_MARKDOWN_NODES,
    AssetReport,
    NodeReport,
    RunReport,
    artifact_key,
    event_feed_url,
    render_markdown,
)

from support.prefect_api import asset_events, materializations, related_assets
from support.projects import make_shop_copy

pytestmark = pytest.mark.usefixtures("prefect_server")


def runner_for(project: Path, **kwargs: Any) -> PrefectDbtRunner:
    return PrefectDbtRunner(settings=PrefectDbtSettings(project_dir=project, profiles_dir=project), **kwargs)


def artifacts_of(flow_run_id: Any) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


def masked(text: str) -> list[str]:
    return [re.sub(r"\| \d+\.\d\d \|", "| T |", line) for line in text.splitlines()]


# The Prefect UI of the session's server (conftest.py), as Prefect derives it from the API's address.
UI = os.environ["PREFECT_API_URL"].removesuffix("/api")
# Whole minutes, as the UI writes them back into its URL.
MINUTE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:00\.000Z"


def event_window(url: str, flow_run_id: Any) -> tuple[dt.datetime, dt.datetime]:
    """The time range of a report's event feed link, which must be exactly this link."""
    match = re.fullmatch(
        re.escape(f"{UI}/events?resource=prefect.flow-run.{flow_run_id}&events=prefect.asset.*&type=range")
        + f"&startDate=({MINUTE})&endDate=({MINUTE})",
        url,
    )
    assert match, url
    since, until = (dt.datetime.fromisoformat(text.replace("Z", "+00:00")) for text in match.groups())
    return since, until


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
    assets, slowest = lines[10:20], lines[22:27]
    assert lines[:10] + lines[20:22] + lines[27:] == [
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
    url = several_invokes["seed_report"].asset_events_url
    event_window(url, several_invokes["flow_run_id"])
    assert assets == [
        "## Assets (3)",
        "",
        "| Asset | Outcome | Row count | Upstream assets |",
        "| :-- | :-- | --: | :-- |",
        "| `duckdb://shop/main_raw/raw_customers` | materialized | 21 |  |",
        "| `duckdb://shop/main_raw/raw_orders` | materialized | 30 |  |",
        "| `duckdb://shop/main_raw/raw_products` | materialized | 10 |  |",
        "",
        f"Their events, with this lineage: [this flow run's asset events]({url})",
        "",
    ]
    assert slowest[:2] == ["| Node | Status | Duration (s) |", "| :-- | :-- | --: |"]
    assert sorted(slowest[2:]) == [
        "| seed raw_customers | success | T |",
        "| seed raw_orders | success | T |",
        "| seed raw_products | success | T |",
    ]
    durations = [float(d) for d in re.findall(r"\| (\d+\.\d\d) \|$", "\n".join(seed.data.splitlines()[24:27]), re.M)]
    assert len(durations) == 3
    assert durations == sorted(durations, reverse=True)


def test_disabled_assets_leave_the_asset_column_empty(several_invokes: dict[str, Any]) -> None:
    rows = json.loads(several_invokes["artifacts"]["dbt-shop-run-nodes"].data)
    assert [(r["node"], r["status"], r["asset_key"]) for r in rows] == [("stg_products", "success", None)]
    assert "| stg_products | model | success | T |  |  |" in masked(several_invokes["artifacts"]["dbt-shop-run"].data)


def test_no_assets_section_when_assets_are_off_or_none_is_materialized(several_invokes: dict[str, Any]) -> None:
    artifacts = several_invokes["artifacts"]
    # disable_assets=True; and source freshness, which materializes nothing.
    assert "## Assets" not in artifacts["dbt-shop-run"].data
    assert "asset events" not in artifacts["dbt-shop-run"].data
    assert "## Assets" not in artifacts["dbt-shop-source-freshness"].data
    assert several_invokes["freshness_report"].asset_events_url is None


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


# -- the Assets section of a build that fails -------------------------------------------
@pytest.fixture(scope="module")
def broken_build(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`dbt build --select +product_revenue` with stg_payments broken: stg_payments fails,
    so orders and product_revenue, downstream of it, are skipped. Cautious indirect
    selection leaves out the tests that also read unselected models."""
    project = make_shop_copy(tmp_path_factory.mktemp("report-assets"))
    (project / "models" / "staging" / "stg_payments.sql").write_text(
        "select no_such_column from {{ source('payments_app', 'payments') }}\n"
    )
    seen: dict[str, Any] = {}

    @flow(name="report-assets-test")
    def broken() -> None:
        seen["flow_run_id"] = FlowRunContext.get().flow_run.id
        runner = runner_for(project, raise_on_failure=False)
        runner.invoke(["build", "--select", "+product_revenue", "--indirect-selection", "cautious"])
        seen["report"] = runner.last_report

    state = broken(return_state=True)
    assert state.is_completed(), state.message
    seen["artifacts"] = {a.key: a for a in artifacts_of(seen["flow_run_id"])}
    seen["events"] = asset_events(seen["flow_run_id"])
    return seen


RAW_ORDERS = "duckdb://shop/main_raw/raw_orders"
RAW_PRODUCTS = "duckdb://shop/main_raw/raw_products"
STG_ORDERS = "duckdb://shop/main_staging/stg_orders"
STG_PAYMENTS = "duckdb://shop/main_staging/stg_payments"
STG_PRODUCTS = "duckdb://shop/main_staging/stg_products"
ORDERS = "duckdb://shop/main_marts/orders"
PRODUCT_REVENUE = "duckdb://shop/main_marts/product_revenue"
PAYMENTS_SOURCE = "duckdb://shop/payments_app/payments"


def test_the_assets_section_lists_each_asset_with_its_upstream_keys_outcome_and_row_count(
    broken_build: dict[str, Any],
) -> None:
    report = broken_build["report"]
    # Through the ephemeral int_order_payments, orders reads stg_payments. Views are
    # counted only with count_view_rows (stg_orders has it, stg_products not).
    assert report.assets == [
        AssetReport(ORDERS, (STG_ORDERS, STG_PAYMENTS, STG_PRODUCTS), "not built (skipped)", None),
        AssetReport(PRODUCT_REVENUE, (ORDERS, STG_PRODUCTS), "not built (skipped)", None),
        AssetReport(RAW_ORDERS, (), "materialized", 30),
        AssetReport(RAW_PRODUCTS, (), "materialized", 10),
        AssetReport(STG_ORDERS, (RAW_ORDERS,), "materialized", 30),
        AssetReport(STG_PAYMENTS, (PAYMENTS_SOURCE,), "failed", None),
        AssetReport(STG_PRODUCTS, (RAW_PRODUCTS,), "materialized", None),
    ]
    markdown = broken_build["artifacts"]["dbt-shop-build"].data
    assert markdown == render_markdown(report)
    lines = markdown.splitlines()
    start = lines.index("## Assets (7)")
    url = report.asset_events_url
    assert lines[start : lines.index("## Slowest nodes")] == [
        "## Assets (7)",
        "",
        "| Asset | Outcome | Row count | Upstream assets |",
        "| :-- | :-- | --: | :-- |",
        "| `duckdb://shop/main_marts/orders` | not built (skipped) |  | `duckdb://shop/main_staging/stg_orders`, "
        "`duckdb://shop/main_staging/stg_payments`, `duckdb://shop/main_staging/stg_products` |",
        "| `duckdb://shop/main_marts/product_revenue` | not built (skipped) |  | `duckdb://shop/main_marts/orders`, "
        "`duckdb://shop/main_staging/stg_products` |",
        "| `duckdb://shop/main_raw/raw_orders` | materialized | 30 |  |",
        "| `duckdb://shop/main_raw/raw_products` | materialized | 10 |  |",
        "| `duckdb://shop/main_staging/stg_orders` | materialized | 30 | `duckdb://shop/main_raw/raw_orders` |",
        "| `duckdb://shop/main_staging/stg_payments` | failed |  | `duckdb://shop/payments_app/payments` |",
        "| `duckdb://shop/main_staging/stg_products` | materialized |  | `duckdb://shop/main_raw/raw_products` |",
        "",
        f"Their events, with this lineage: [this flow run's asset events]({url})",
        "",
    ]
    # The section comes after the failure it explains.
    assert lines.index("## Failures (1)") < start


def test_the_assets_section_says_what_the_asset_events_say(broken_build: dict[str, Any]) -> None:
    report, events = broken_build["report"], broken_build["events"]
    succeeded, failed = materializations(events), materializations(events, "failed")
    rows = {asset.key: asset for asset in report.assets}
    assert sorted(succeeded) == [key for key, row in rows.items() if row.outcome == "materialized"]
    assert sorted(failed) == [key for key, row in rows.items() if row.outcome == "failed"]
    # A skipped model built nothing: no event of its own, whatever the report lists.
    assert {e.resource.id for e in events if e.resource.id in (ORDERS, PRODUCT_REVENUE)} == set()
    for key, event in {**succeeded, **failed}.items():
        assert related_assets(event) == set(rows[key].upstream), key


def test_the_event_feed_link_selects_exactly_this_runs_asset_events(broken_build: dict[str, Any]) -> None:
    flow_run_id = broken_build["flow_run_id"]
    since, until = event_window(broken_build["report"].asset_events_url, flow_run_id)
    assert until - since <= dt.timedelta(minutes=10)
    # The filter the UI's event feed sends for the link's query parameters.
    ui_filter = EventFilter(
        occurred=EventOccurredFilter(since=since, until=until),
        any_resource=EventAnyResourceFilter(id_prefix=[f"prefect.flow-run.{flow_run_id}"]),
        event=EventNameFilter(prefix=["prefect.asset."]),
    )
    with get_client(sync_client=True) as client:
        page = client.read_events(filter=ui_filter, limit=50)
        shown = list(page.events)
        while page.next_page:
            page = client.read_events_page(page.next_page)
            shown.extend(page.events)
    assert sorted(e.id for e in shown) == sorted(e.id for e in broken_build["events"])
    assert sorted((e.event, e.resource.id) for e in shown) == [
        ("prefect.asset.materialization.failed", STG_PAYMENTS),
        ("prefect.asset.materialization.succeeded", RAW_ORDERS),
        ("prefect.asset.materialization.succeeded", RAW_PRODUCTS),
        ("prefect.asset.materialization.succeeded", STG_ORDERS),
        ("prefect.asset.materialization.succeeded", STG_PRODUCTS),
        # One reference per upstream asset of each materialization, as Prefect's own tasks emit.
        ("prefect.asset.referenced", RAW_ORDERS),
        ("prefect.asset.referenced", RAW_PRODUCTS),
        ("prefect.asset.referenced", PAYMENTS_SOURCE),
    ]


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


def test_the_assets_section_keeps_its_cells_whole_and_lists_at_most_500_assets() -> None:
    many_parents = tuple(f"duckdb://db/main/parent_{i:02d}" for i in range(20))
    assets = [
        AssetReport("duckdb://db/main/a|b", many_parents, "materialized", 7),
        *(AssetReport(f"duckdb://db/main/m{i:04d}", (), "not built (no-op)") for i in range(MAX_MARKDOWN_NODES + 4)),
    ]
    report = RunReport(project="p", command="build", assets=assets, flow_run_id="f00")
    lines = render_markdown(report).splitlines()
    first = lines[lines.index(f"## Assets ({MAX_MARKDOWN_NODES + 5})") + 4]
    # Keys are never cut: as many as fit in a cell, then how many more.
    shown = ", ".join(f"`{key}`" for key in many_parents[:9])
    assert first == f"| `duckdb://db/main/a\\|b` | materialized | 7 | {shown}, … 11 more |"
    assert lines.count("| `duckdb://db/main/m0000` | not built (no-op) |  |  |") == 1
    assert sum(line.startswith("| `duckdb://db/main/m") for line in lines) == MAX_MARKDOWN_NODES - 1
    # Without the UI's address, the section says where the events are instead of linking them.
    assert lines[-3:] == [
        "… and 5 more assets: their keys and statuses are in the table artifact `dbt-p-build-nodes`.",
        "",
        "Their events, with this lineage, are in the Prefect UI's Event Feed: "
        "resource `prefect.flow-run.f00`, events `prefect.asset.*`.",
    ]


def test_event_feed_links() -> None:
    since = dt.datetime(2025, 3, 4, 5, 6, tzinfo=dt.UTC)
    until = dt.datetime(2025, 3, 4, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert event_feed_url("http://127.0.0.1:4200", "f00", since, until) == (
        "http://127.0.0.1:4200/events?resource=prefect.flow-run.f00&events=prefect.asset.*"
        "&type=range&startDate=2025-03-04T05:06:00.000Z&endDate=2025-03-04T05:08:09.000Z"
    )
    assert event_feed_url("http://127.0.0.1:4200", "f00") == (
        "http://127.0.0.1:4200/events?resource=prefect.flow-run.f00&events=prefect.asset.*"
    )
