"""The dbt package's metadata hooks end to end: row counts, columns, tests as asset checks
and the run history, from a real build of the integration project in a flow."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from dbt.cli.main import dbtRunner
from prefect import flow
from prefect.context import FlowRunContext

from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings
from support.prefect_api import asset_events, by_name, events_of_flow_run, logs, materializations, state_of, task_runs

from support.projects import make_shop_copy

pytestmark = pytest.mark.usefixtures("prefect_server")

KEY = "duckdb://shop/{}"
METADATA_RECORD = "dbt_prefect.record.metadata "

# Relations whose materialization carries a row count: tables, the incremental model, seeds,
# the snapshot, and stg_orders, the one view that opts in (count_view_rows: true).
COUNTED = {
    "main_raw/raw_customers": '"shop"."main_raw"."raw_customers"',
    "main_raw/raw_orders": '"shop"."main_raw"."raw_orders"',
    "main_raw/raw_products": '"shop"."main_raw"."raw_products"',
    "main_staging/stg_orders": '"shop"."main_staging"."stg_orders"',
    "main_marts/orders": '"shop"."main_marts"."orders"',
    "main_marts/customers": '"shop"."main_marts"."customers"',
    "main_marts/product_revenue": '"shop"."main_marts"."product_revenue"',
    "main_marts/daily_order_summary": '"shop"."main_marts"."daily_order_summary"',
    "main_snapshots/customers_snapshot": '"shop"."main_snapshots"."customers_snapshot"',
}
UNCOUNTED_VIEWS = ["main_staging/stg_customers", "main_staging/stg_payments", "main_staging/stg_products"]

# The asset each test checks: the node a generic test is attached to, a unit test's model,
# the source of a source test, every relation a singular test selects from.
CHECKED = {
    "accepted_values_customers_customer_segment__prospect__new__returning": ["main_marts/customers"],
    "accepted_values_stg_orders_status__placed__shipped__completed__returned": ["main_staging/stg_orders"],
    "accepted_values_stg_payments_payment_method__credit_card__bank_transfer__gift_card__coupon": ["main_staging/stg_payments"],
    "assert_daily_summary_matches_orders": ["main_marts/daily_order_summary", "main_marts/orders"],
    "assert_demo_failure": ["main_marts/product_revenue"],
    "assert_product_revenue_not_negative": ["main_marts/product_revenue"],
    "not_null_customers_customer_id": ["main_marts/customers"],
    "not_null_daily_order_summary_order_date": ["main_marts/daily_order_summary"],
    "not_null_orders_order_id": ["main_marts/orders"],
    "not_null_raw_customers_id": ["main_raw/raw_customers"],
    "not_null_stg_orders_order_id": ["main_staging/stg_orders"],
    "relationships_stg_orders_customer_id__customer_id__ref_stg_customers_": ["main_staging/stg_orders"],
    "relationships_stg_payments_order_id__order_id__ref_stg_orders_": ["main_staging/stg_payments"],
    "source_not_null_payments_app_payments_id": ["payments_app/payments"],
    "source_unique_payments_app_payments_id": ["payments_app/payments"],
    "test_customers_segments_and_lifetime_value": ["main_marts/customers"],
    "unique_customers_customer_id": ["main_marts/customers"],
    "unique_daily_order_summary_order_date": ["main_marts/daily_order_summary"],
    "unique_orders_order_id": ["main_marts/orders"],
    "unique_product_revenue_product_id": ["main_marts/product_revenue"],
    "unique_stg_customers_customer_id": ["main_staging/stg_customers"],
    "unique_stg_orders_order_id": ["main_staging/stg_orders"],
    "unique_stg_payments_payment_id": ["main_staging/stg_payments"],
    "unique_stg_products_product_id": ["main_staging/stg_products"],
}


def runner_for(project: Path, **kwargs: Any) -> PrefectDbtRunner:
    return PrefectDbtRunner(settings=PrefectDbtSettings(project_dir=project, profiles_dir=project), **kwargs)


def check_events(flow_run_id: Any) -> list[Any]:
    """Every dbt_prefect.asset.check.* event related to a flow run, oldest first."""
    return events_of_flow_run(flow_run_id, "dbt_prefect.asset.check.")


def build_in_flow(project: Path, args: list[str], **kwargs: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    @flow(name="dbt-prefect-metadata")
    def metadata_flow() -> None:
        seen["flow_run_id"] = FlowRunContext.get().flow_run.id
        seen["result"] = runner_for(project, raise_on_failure=False).invoke(args, **kwargs)
        # Read at once: invoke promises every event is stored when it returns.
        seen["events"] = asset_events(seen["flow_run_id"])
        seen["checks"] = check_events(seen["flow_run_id"])
        seen["runs"] = by_name(task_runs(seen["flow_run_id"]))

    metadata_flow()
    return seen


def query(project: Path, sql: str) -> list[tuple[Any, ...]]:
    connection = duckdb.connect(str(project.parent / "shop.duckdb"))
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def edit_yaml(path: Path, change: Any) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="module")
def shop_build(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One build of the integration project, with its demo test failing on purpose."""
    project = make_shop_copy(tmp_path_factory.mktemp("metadata"))
    seen = build_in_flow(project, ["build", "--vars", "{fail_demo_test: true}"])
    seen["project"] = project
    seen["run_results"] = json.loads((project / "target" / "run_results.json").read_text())
    seen["manifest"] = json.loads((project / "target" / "manifest.json").read_text())
    return seen


def test_the_build_ran_with_the_package_hooks(shop_build: dict[str, Any]) -> None:
    statuses = {r["unique_id"]: r["status"] for r in shop_build["run_results"]["results"]}
    assert statuses.pop("test.shop.assert_demo_failure") == "fail"
    assert set(statuses.values()) == {"success", "pass"}
    assert statuses["operation.dbt_prefect.dbt_prefect-on-run-end-0"] == "success"


def test_row_count_on_each_materialization_equals_select_count(shop_build: dict[str, Any]) -> None:
    succeeded = materializations(shop_build["events"])
    counted = {key: event.payload["row_count"] for key, event in succeeded.items() if "row_count" in event.payload}
    in_warehouse = {
        KEY.format(path): query(shop_build["project"], f"select count(*) from {relation}")[0][0]
        for path, relation in COUNTED.items()
    }
    assert counted == in_warehouse
    assert in_warehouse == {
        KEY.format("main_raw/raw_customers"): 21, KEY.format("main_raw/raw_orders"): 30,
        KEY.format("main_raw/raw_products"): 10, KEY.format("main_staging/stg_orders"): 30,
        KEY.format("main_marts/orders"): 30, KEY.format("main_marts/customers"): 21,
        KEY.format("main_marts/product_revenue"): 10, KEY.format("main_marts/daily_order_summary"): 28,
        KEY.format("main_snapshots/customers_snapshot"): 21,
    }
    for path in UNCOUNTED_VIEWS:  # views are counted only when they opt in
        assert "row_count" not in succeeded[KEY.format(path)].payload


def test_metadata_is_on_the_nodes_own_materialization_event(shop_build: dict[str, Any]) -> None:
    event = materializations(shop_build["events"])[KEY.format("main_marts/orders")]
    related = {(r.role, r.id) for r in event.related}
    assert ("task-run", f"prefect.task-run.{shop_build['runs']['model orders'].id}") in related
    assert event.payload["unique_id"] == "model.shop.orders"
    assert event.payload["row_count"] == 30
    assert "rows_affected" not in event.payload  # DuckDB reports none for a table it creates
    assert event.payload["message"] == "OK"
    seed = materializations(shop_build["events"])[KEY.format("main_raw/raw_orders")].payload
    assert (seed["row_count"], seed["rows_affected"], seed["message"]) == (30, 30, "INSERT 30")
    assert 0 < event.payload["execution_time"] < 60
    # No other asset event carries metadata.
    others = [e for e in shop_build["events"] if not e.event.startswith("prefect.asset.materialization.")]
    assert [e for e in others if "row_count" in e.payload or "columns" in e.payload] == []


def test_columns_match_the_warehouse_with_descriptions_from_the_manifest(shop_build: dict[str, Any]) -> None:
    succeeded = materializations(shop_build["events"])
    assert len(succeeded) == 12
    manifest = shop_build["manifest"]
    for key, event in succeeded.items():
        node = manifest["nodes"][event.payload["unique_id"]]
        descriptions = {name: column["description"] for name, column in node["columns"].items()}
        warehouse = query(
            shop_build["project"],
            "select column_name, data_type from information_schema.columns "
            f"where table_catalog = 'shop' and table_schema = '{node['schema']}' and table_name = '{node['alias']}' "
            "order by ordinal_position",
        )
        assert event.payload["columns"] == [
            {"name": name, "data_type": data_type, "description": descriptions.get(name, "")}
            for name, data_type in warehouse
        ], key
    orders = succeeded[KEY.format("main_marts/orders")].payload["columns"]
    assert orders[0] == {"name": "order_id", "data_type": "INTEGER", "description": "Primary key."}
    assert [c["name"] for c in orders] == [
        "order_id", "customer_id", "product_id", "order_date", "status", "quantity", "unit_price",
        "order_amount", "payment_count", "amount_paid",
    ]
    snapshot = succeeded[KEY.format("main_snapshots/customers_snapshot")].payload["columns"]
    assert {"name": "dbt_valid_to", "data_type": "TIMESTAMP", "description": ""} in snapshot


def test_every_test_becomes_a_check_on_the_asset_it_tests(shop_build: dict[str, Any]) -> None:
    runs = shop_build["runs"]
    found: dict[str, list[str]] = {}
    for event in shop_build["checks"]:
        task_run = [r.id for r in event.related if r.role == "task-run"]
        assert len(task_run) == 1
        test_run = next(run for run in runs.values() if f"prefect.task-run.{run.id}" == task_run[0])
        assert test_run.name.split(" ", 1)[1] == event.payload["test_name"]
        found.setdefault(event.payload["test_name"], []).append(event.resource.id)
    assert {name: sorted(keys) for name, keys in found.items()} == {
        name: sorted(KEY.format(path) for path in paths) for name, paths in CHECKED.items()
    }
    assert len(shop_build["checks"]) == 25


def test_a_passing_check_says_so(shop_build: dict[str, Any]) -> None:
    by_test = {event.payload["test_name"]: event for event in shop_build["checks"]}
    unit = by_test["test_customers_segments_and_lifetime_value"]
    assert unit.event == "dbt_prefect.asset.check.passed"
    assert unit.payload == {
        "test_name": "test_customers_segments_and_lifetime_value",
        "unique_id": "unit_test.shop.customers.test_customers_segments_and_lifetime_value",
        "status": "pass", "failures": 0, "message": None,
    }
    assert unit.resource.id == KEY.format("main_marts/customers")
    assert unit.resource["prefect.resource.name"] == "shop.main_marts.customers"
    relationship = by_test["relationships_stg_orders_customer_id__customer_id__ref_stg_customers_"]
    assert relationship.event == "dbt_prefect.asset.check.passed"
    assert relationship.payload["unique_id"] == (
        "test.shop.relationships_stg_orders_customer_id__customer_id__ref_stg_customers_.430bf21500"
    )
    assert {e.event for e in shop_build["checks"]} == {"dbt_prefect.asset.check.passed", "dbt_prefect.asset.check.failed"}


def test_a_failing_test_is_a_failed_check_on_its_model(shop_build: dict[str, Any]) -> None:
    failed = [e for e in shop_build["checks"] if e.event == "dbt_prefect.asset.check.failed"]
    assert len(failed) == 1
    event = failed[0]
    assert event.resource.id == KEY.format("main_marts/product_revenue")
    assert event.payload == {
        "test_name": "assert_demo_failure",
        "unique_id": "test.shop.assert_demo_failure",
        "status": "fail",
        "failures": 10,
        "message": "Got 10 results, configured to fail if != 0",
    }
    test_run = shop_build["runs"]["test assert_demo_failure"]
    assert state_of(test_run) == ("FAILED", "Failed")
    assert ("task-run", f"prefect.task-run.{test_run.id}") in {(r.role, r.id) for r in event.related}
    assert ("flow-run", f"prefect.flow-run.{shop_build['flow_run_id']}") in {(r.role, r.id) for r in event.related}


def test_run_history_rows_match_run_results(shop_build: dict[str, Any]) -> None:
    run_results = shop_build["run_results"]
    invocation_id = run_results["metadata"]["invocation_id"]
    columns = [
        "invocation_id", "flow_run_id", "task_run_id", "unique_id", "resource_type", "status", "started_at",
        "finished_at", "execution_time", "rows_affected", "row_count", "message",
    ]
    rows = query(shop_build["project"], f"select {', '.join(columns)} from audit.dbt_prefect_run_history")
    history = {row[3]: dict(zip(columns, row)) for row in rows}
    assert len(rows) == len(history) == 37
    succeeded = materializations(shop_build["events"])
    row_counts = {e.payload["unique_id"]: e.payload["row_count"] for e in succeeded.values() if "row_count" in e.payload}
    task_run_ids = {run.name: str(run.id) for run in shop_build["runs"].values()}
    manifest = shop_build["manifest"]

    def naive(stamp: str) -> dt.datetime:
        return dt.datetime.fromisoformat(stamp.removesuffix("Z")).replace(tzinfo=None)

    expected = {}
    for result in run_results["results"]:
        unique_id = result["unique_id"]
        if unique_id.startswith("operation."):
            continue
        node = manifest["nodes"].get(unique_id) or manifest["unit_tests"][unique_id]
        timing = result["timing"]
        expected[unique_id] = {
            "invocation_id": invocation_id,
            "flow_run_id": str(shop_build["flow_run_id"]),
            "task_run_id": task_run_ids[f"{node['resource_type']} {node['name']}"],
            "unique_id": unique_id,
            "resource_type": node["resource_type"],
            "status": result["status"],
            "started_at": naive(timing[0]["started_at"]),
            "finished_at": naive(timing[-1]["completed_at"]),
            "execution_time": result["execution_time"],
            "rows_affected": result["adapter_response"].get("rows_affected"),
            "row_count": row_counts.get(unique_id),
            "message": result["message"],
        }
    assert history == expected
    assert history["seed.shop.raw_orders"]["row_count"] == 30
    assert history["test.shop.assert_demo_failure"]["message"] == "Got 10 results, configured to fail if != 0"


def test_plain_dbt_build_with_the_package_installed_succeeds_and_records_history(shop_project: Path) -> None:
    records: list[str] = []

    def collect(event: Any) -> None:
        if event.info.name in ("JinjaLogDebug", "JinjaLogInfo") and event.info.msg.startswith("dbt_prefect.record."):
            records.append(event.info.msg)

    args = ["--project-dir", str(shop_project), "--profiles-dir", str(shop_project)]
    result = dbtRunner(callbacks=[collect]).invoke(["build", *args])
    assert result.success
    # Without the Python runner, collect_metadata queries nothing and logs nothing.
    assert records == ["dbt_prefect.record.run_context_request"]
    rows = query(
        shop_project,
        "select unique_id, flow_run_id, task_run_id, row_count from audit.dbt_prefect_run_history order by unique_id",
    )
    assert len(rows) == 36
    assert {(flow_run_id, task_run_id) for _, flow_run_id, task_run_id, _ in rows} == {(None, None)}
    counted = {unique_id: row_count for unique_id, _, _, row_count in rows if row_count is not None}
    # The history counts the relations itself: the same ones, the same numbers.
    assert counted == {
        "model.shop.customers": 21, "model.shop.daily_order_summary": 28, "model.shop.orders": 30,
        "model.shop.product_revenue": 10, "model.shop.stg_orders": 30, "seed.shop.raw_customers": 21,
        "seed.shop.raw_orders": 30, "seed.shop.raw_products": 10, "snapshot.shop.customers_snapshot": 21,
    }
    # A second run appends to the same table.
    assert dbtRunner().invoke(["build", *args]).success
    assert query(shop_project, "select count(distinct invocation_id), count(*) from audit.dbt_prefect_run_history") == [(2, 72)]


def test_metadata_is_collected_only_when_assets_are_emitted(shop_project: Path) -> None:
    def seed_records(**runner_kwargs: Any) -> list[str]:
        records: list[str] = []

        def collect(event: Any) -> None:
            if event.info.name == "JinjaLogDebug" and event.info.msg.startswith(METADATA_RECORD):
                records.append(json.loads(event.info.msg.removeprefix(METADATA_RECORD))["unique_id"])

        @flow(name="dbt-prefect-metadata-switch")
        def seed_flow() -> None:
            runner_for(shop_project, **runner_kwargs).invoke(["seed"], callbacks=[collect])

        seed_flow()
        return sorted(records)

    assert seed_records() == ["seed.shop.raw_customers", "seed.shop.raw_orders", "seed.shop.raw_products"]
    assert seed_records(disable_assets=True) == []


def test_switches_in_meta_and_vars_turn_collection_off(shop_project: Path) -> None:
    def no_columns_on_orders(data: dict[str, Any]) -> None:
        orders = next(m for m in data["models"] if m["name"] == "orders")
        orders["config"]["meta"]["prefect"] = {"columns": False}

    edit_yaml(shop_project / "models" / "marts" / "_marts.yml", no_columns_on_orders)
    seen = build_in_flow(shop_project, ["build", "--select", "+product_revenue", "--resource-type", "seed", "--resource-type", "model"])
    succeeded = materializations(seen["events"])
    orders = succeeded[KEY.format("main_marts/orders")].payload
    assert orders["row_count"] == 30 and "columns" not in orders
    assert succeeded[KEY.format("main_marts/product_revenue")].payload["row_count"] == 10
    off = build_in_flow(shop_project, ["run", "--select", "product_revenue", "--vars", "{dbt_prefect: {row_counts: false}}"])
    revenue = materializations(off["events"])[KEY.format("main_marts/product_revenue")].payload
    assert "row_count" not in revenue
    assert [c["name"] for c in revenue["columns"]] == ["product_id", "product_name", "category", "units_sold", "revenue"]


def test_assets_turned_off_get_no_checks(shop_project: Path) -> None:
    def disable_customers(data: dict[str, Any]) -> None:
        customers = next(m for m in data["models"] if m["name"] == "customers")
        customers["config"]["meta"]["prefect"] = {"enable_assets": False}

    edit_yaml(shop_project / "models" / "marts" / "_marts.yml", disable_customers)
    seen = build_in_flow(shop_project, ["build", "--select", "+customers", "--indirect-selection", "cautious"])
    assert seen["result"].success
    tests_of_customers = [
        "test accepted_values_customers_customer_segment__prospect__new__returning",
        "test not_null_customers_customer_id",
        "test unique_customers_customer_id",
        "unit_test test_customers_segments_and_lifetime_value",
    ]
    assert [state_of(seen["runs"][name]) for name in tests_of_customers] == [("COMPLETED", "Completed")] * 4
    checked = {event.resource.id for event in seen["checks"]}
    assert KEY.format("main_marts/customers") not in checked
    assert KEY.format("main_marts/orders") in checked
    assert len(seen["checks"]) == 14  # the 18 tests of +customers, less the 4 on customers


def test_a_malformed_record_is_a_warning_and_the_run_goes_on(shop_project: Path) -> None:
    (shop_project / "models" / "marts" / "odd_record.sql").write_text(
        "{{ config(materialized='table', meta={'prefect': {'row_count': false, 'columns': false}},"
        " post_hook=\"{{ log('dbt_prefect.record.metadata {not json') }}\") }}\n"
        "select 1 as id\n"
    )
    seen = build_in_flow(shop_project, ["run", "--select", "odd_record"])
    assert seen["result"].success
    run = seen["runs"]["model odd_record"]
    assert state_of(run) == ("COMPLETED", "Completed")
    payload = materializations(seen["events"])[KEY.format("main_marts/odd_record")].payload
    assert "row_count" not in payload and "columns" not in payload
    warnings = [log for log in logs(seen["flow_run_id"]) if log.level == 30 and log.task_run_id == run.id]
    assert [w.message for w in warnings] == [
        "dbt-prefect ignored a malformed metadata record (not JSON: Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1)): dbt_prefect.record.metadata {not json"
    ]
