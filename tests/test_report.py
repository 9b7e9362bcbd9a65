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
    UiPages,
    artifact_key,
    event_feed_url,
    render_markdown,
)

from support.lineage_graphs import pipeline_build
from support.prefect_api import asset_events, by_name, materializations, related_assets, task_runs
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


def asset_links(url: str, flow_run_id: Any) -> Any:
    """The V1 event feed address of one asset's events, in the same time range as the
    report's link to the flow run's asset events (``url``)."""
    since, until = (t.strftime("%Y-%m-%dT%H:%M:%S.000Z") for t in event_window(url, flow_run_id))

    def link(key: str) -> str:
        resource = key.replace("/", "%2F")
        return f"{UI}/events?resource={resource}&events=prefect.asset.*&type=range&startDate={since}&endDate={until}"

    return link


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


def sections(markdown: str) -> dict[str, list[str]]:
    """The report's lines by section, under its "## " heading ("" for the lines before the first)."""
    found: dict[str, list[str]] = {"": []}
    current = ""
    for line in markdown.splitlines():
        if line.startswith("## "):
            current = line
            found[current] = []
        else:
            found[current].append(line)
    return found


LEGEND = (
    "What this run built and read, left to right. Colour and words give each node's dbt status: ✓ success, "
    "⚠ warn, ✗ error or fail, ⊘ skipped, – no-op, ↻ cached; dotted boxes were read, not run. Tests are "
    "counted on the node they check; a red (amber) border on a node that ran says one of its tests failed "
    "(warned). Click a node to open its task run."
)


def test_the_markdown_report_has_counts_lineage_assets_slowest_nodes_and_a_node_table(
    several_invokes: dict[str, Any],
) -> None:
    seed = several_invokes["artifacts"]["dbt-shop-seed"]
    assert seed.description == "`dbt seed` in project shop: PASS=5 WARN=0 ERROR=0 SKIP=0 NO-OP=0 TOTAL=5"
    found = sections(seed.data)
    assert list(found) == ["", "## Lineage", "## Assets (3)", "## Slowest nodes", "## Nodes (3)"]
    assert found[""] == [
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
    ]
    # Each seed links to its own task run, in the UI the session's server would serve (V1:
    # it runs without the UI, so it cannot say V2 is its default).
    runs = by_name(task_runs(several_invokes["flow_run_id"]))
    link = {name: f"{UI}/runs/task-run/{runs[f'seed {name}'].id}" for name in ("raw_customers", "raw_orders", "raw_products")}
    assert found["## Lineage"] == [
        "",
        LEGEND,
        "",
        "```mermaid",
        '%%{init: {"themeVariables": {"lineColor": "#8b95a5"}}}%%',
        "flowchart LR",
        "  classDef succeeded fill:#dcfce7,stroke:#15803d,color:#14532d",
        '  n0(["raw_customers<br/>seed · ✓ success"]):::succeeded',
        '  n1(["raw_orders<br/>seed · ✓ success"]):::succeeded',
        '  n2(["raw_products<br/>seed · ✓ success"]):::succeeded',
        f'  click n0 href "{link["raw_customers"]}"',
        f'  click n1 href "{link["raw_orders"]}"',
        f'  click n2 href "{link["raw_products"]}"',
        "```",
        "",
    ]
    url = several_invokes["seed_report"].asset_events_url
    own = asset_links(url, several_invokes["flow_run_id"])
    # The keys' common start once; each key then links to that asset's own events.
    assert found["## Assets (3)"] == [
        "",
        "Keys start with `duckdb://shop/main_raw/`; each links to that asset's events.",
        "",
        "| Asset | Outcome | Row count | Upstream assets |",
        "| :-- | :-- | --: | :-- |",
        f"| [`raw_customers`]({own('duckdb://shop/main_raw/raw_customers')}) | materialized | 21 |  |",
        f"| [`raw_orders`]({own('duckdb://shop/main_raw/raw_orders')}) | materialized | 30 |  |",
        f"| [`raw_products`]({own('duckdb://shop/main_raw/raw_products')}) | materialized | 10 |  |",
        "",
        f"Their events, with this lineage: [this flow run's asset events]({url})",
        "",
    ]
    slowest = masked("\n".join(found["## Slowest nodes"]))
    assert slowest[:3] == ["", "| Node | Status | Duration (s) |", "| :-- | :-- | --: |"]
    assert sorted(slowest[3:6]) == [
        "| seed raw_customers | success | T |",
        "| seed raw_orders | success | T |",
        "| seed raw_products | success | T |",
    ]
    durations = [float(d) for d in re.findall(r"\| (\d+\.\d\d) \|$", "\n".join(found["## Slowest nodes"]), re.M)]
    assert len(durations) == 3
    assert durations == sorted(durations, reverse=True)
    # The asset keys are in the Assets section and the table artifact: the node table keeps
    # to what fits the V2 page's content column.
    assert masked("\n".join(found["## Nodes (3)"])) == [
        "",
        "| Node | Type | Status | Duration (s) | Rows affected |",
        "| :-- | :-- | :-- | --: | --: |",
        "| raw_customers | seed | success | T | 21 |",
        "| raw_orders | seed | success | T | 30 |",
        "| raw_products | seed | success | T | 10 |",
        "",
        "Whole names, asset keys and messages of every node: the table artifact `dbt-shop-seed-nodes`.",
    ]


def test_disabled_assets_leave_the_asset_column_empty(several_invokes: dict[str, Any]) -> None:
    rows = json.loads(several_invokes["artifacts"]["dbt-shop-run-nodes"].data)
    assert [(r["node"], r["status"], r["asset_key"]) for r in rows] == [("stg_products", "success", None)]
    assert "| stg_products | model | success | T |  |" in masked(several_invokes["artifacts"]["dbt-shop-run"].data)


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
    own = asset_links(url, broken_build["flow_run_id"])
    assert lines[start : lines.index("## Slowest nodes")] == [
        "## Assets (7)",
        "",
        "Keys start with `duckdb://shop/`; each links to that asset's events.",
        "",
        "| Asset | Outcome | Row count | Upstream assets |",
        "| :-- | :-- | --: | :-- |",
        # How many upstream assets and the first names: the Lineage picture has them all.
        f"| [`main_marts/orders`]({own(ORDERS)}) | not built (skipped) |  | 3: stg_orders, stg_payments, … |",
        f"| [`main_marts/product_revenue`]({own(PRODUCT_REVENUE)}) | not built (skipped) |  | 2: orders, stg_products |",
        f"| [`main_raw/raw_orders`]({own(RAW_ORDERS)}) | materialized | 30 |  |",
        f"| [`main_raw/raw_products`]({own(RAW_PRODUCTS)}) | materialized | 10 |  |",
        f"| [`main_staging/stg_orders`]({own(STG_ORDERS)}) | materialized | 30 | 1: raw_orders |",
        f"| [`main_staging/stg_payments`]({own(STG_PAYMENTS)}) | failed |  | 1: payments |",
        f"| [`main_staging/stg_products`]({own(STG_PRODUCTS)}) | materialized |  | 1: raw_products |",
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
    assert "| a\\|b | model | error | 0.50 |  |" in text
    assert "| c | model | skipped |  |  |" in text
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
    assert table.rstrip().splitlines()[-3:] == [
        "… and 20 more nodes: see the table artifact `dbt-p-test-nodes`.",
        "",
        "Whole names, asset keys and messages of every node: the table artifact `dbt-p-test-nodes`.",
    ]
    slowest = text.split("## Slowest nodes")[1].split("## Nodes")[0]
    assert re.findall(r"\| test (t\d+) \|", slowest) == [f"t{i:04d}" for i in range(519, 509, -1)]


def test_the_assets_section_counts_the_upstream_assets_names_the_first_and_lists_at_most_500_assets() -> None:
    many_parents = tuple(f"duckdb://db/main/parent_{i:02d}" for i in range(20))
    assets = [
        AssetReport("duckdb://db/main/a|b", many_parents, "materialized", 7),
        *(AssetReport(f"duckdb://db/main/m{i:04d}", (), "not built (no-op)") for i in range(MAX_MARKDOWN_NODES + 4)),
    ]
    report = RunReport(project="p", command="build", assets=assets, flow_run_id="f00")
    lines = render_markdown(report).splitlines()
    start = lines.index(f"## Assets ({MAX_MARKDOWN_NODES + 5})")
    assert lines[start + 2] == "Keys start with `duckdb://db/main/`."
    # The count, then as many whole names as fit in 30 characters: the column stays narrow.
    assert lines[start + 6] == "| `a\\|b` | materialized | 7 | 20: parent_00, parent_01, … |"
    assert lines.count("| `m0000` | not built (no-op) |  |  |") == 1
    assert sum(line.startswith("| `m") for line in lines) == MAX_MARKDOWN_NODES - 1
    # Without the UI's address, the section says where the events are instead of linking them.
    assert lines[-3:] == [
        "… and 5 more assets: their keys and statuses are in the table artifact `dbt-p-build-nodes`.",
        "",
        "Their events, with this lineage, are in the Prefect UI's Event Feed: "
        "resource `prefect.flow-run.f00`, events `prefect.asset.*`.",
    ]


def test_long_names_are_cut_in_the_middle_so_that_the_tables_fit_the_v2_page() -> None:
    long_test = "accepted_values_customers_customer_segment__prospect__new__returning"
    nodes = [NodeReport(f"test.p.{long_test}", long_test, "test", "pass", "", 0.1, task_run_name=f"test {long_test}")]
    parent = "duckdb://db/main/a_very_long_staging_model_name_for_orders"
    key = "duckdb://db/main_marts/data_test_mutually_exclusive_ranges_with_gaps_zero_length"
    assets = [AssetReport(key, (parent,), "materialized", 1), AssetReport("duckdb://db/main/m", (), "materialized", 2)]
    text = render_markdown(RunReport(project="p", command="build", nodes=nodes, assets=assets))
    assert "| accepted_values_cu…t__new__returning | test | pass | 0.10 |  |" in text
    assert "| test accepted_values_c…spect__new__returning | pass | 0.10 |" in text
    assert "| `main_marts/data_test_m…with_gaps_zero_length` | materialized | 1 | 1: a_very_l…_orders |" in text


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


def test_the_lineage_section_links_the_default_uis_task_runs_and_says_what_it_folded() -> None:
    small = RunReport(project="p", command="build", lineage=pipeline_build(1, depth=3))
    assert "## Lineage" in render_markdown(small)
    assert "click" not in render_markdown(small)  # no UI address: no links, nor the sentence
    assert "Click a node" not in render_markdown(small)
    small.ui = UiPages("http://127.0.0.1:4200/v2", "v2", served=True)
    lineage = sections(render_markdown(small))["## Lineage"]
    assert lineage[1] == LEGEND
    assert lineage[-3:] == [
        '  click n1 href "http://127.0.0.1:4200/v2/runs/task-run/00000000-0000-0000-0000-000000000001"',
        '  click n2 href "http://127.0.0.1:4200/v2/runs/task-run/00000000-0000-0000-0000-000000000002"',
        "```",
    ]
    # A server whose users get V1 is told where the picture is drawn.
    small.ui = UiPages("http://127.0.0.1:4200", "v1", served=True)
    lineage = sections(render_markdown(small))["## Lineage"]
    assert lineage[2:5] == [
        "",
        "Prefect's V1 UI shows the picture as its mermaid source; its V2 UI draws it.",
        "",
    ]
    assert '  click n1 href "http://127.0.0.1:4200/runs/task-run/00000000-0000-0000-0000-000000000001"' in lineage
    # A large build: the picture, then what it folded, in words.
    large = RunReport(project="p", command="build", lineage=pipeline_build(100, failed=[(7, 5)]))
    lineage = sections(render_markdown(large))["## Lineage"]
    after = lineage[lineage.index("```", 4) + 1 :]
    assert after[:3] == [
        "",
        "This build is too large to draw whole (the picture keeps to about 150 boxes). It draws 10 of the "
        "1,000 nodes one by one: 1 failed (or with failed tests), 4 skipped, 5 upstream of them. The other "
        "990 are folded into 10 dashed boxes, one per folder:",
        "",
    ]
    assert "## Lineage" not in render_markdown(RunReport(project="p", command="build"))
