"""Assets: keys, properties, lineage, metadata and the `meta.prefect` switches, read back as events."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from dbt.cli.main import dbtRunner
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.context import FlowRunContext

from dbt_prefect import DbtPrefectTranslator, PrefectDbtRunner, PrefectDbtSettings
from dbt_prefect.model.translator import (
    MAX_DESCRIPTION_LENGTH,
    TRUNCATION_MARKER,
    asset_description,
    asset_name,
    default_asset_key,
)
from dbt_prefect.model.nodes import NodeCatalog, PREFECT_CONFIG_DEFAULTS
from support.prefect_api import asset_events, events_of_flow_run, poll, materializations, related_assets, state_of, task_runs, by_name

from support.projects import make_shop_copy

pytestmark = pytest.mark.usefixtures("prefect_server")

KEY = "duckdb://shop/{}"


def runner_for(project: Path, **kwargs: Any) -> PrefectDbtRunner:
    return PrefectDbtRunner(settings=PrefectDbtSettings(project_dir=project, profiles_dir=project), **kwargs)


def build_in_flow(project: Path, args: list[str], **runner_kwargs: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    @flow(name="dbt-prefect-assets")
    def assets_flow() -> None:
        seen["flow_run_id"] = FlowRunContext.get().flow_run.id
        runner = runner_for(project, raise_on_failure=False, **runner_kwargs)
        seen["result"] = runner.invoke(args)
        # Read at once: invoke promises the events are stored when it returns.
        seen["events"] = asset_events(seen["flow_run_id"])

    assets_flow()
    return seen


def edit_yaml(path: Path, change: Any) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def model_entry(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in data["models"] if m["name"] == name)


def disable_customers_assets(data: dict[str, Any]) -> None:
    model_entry(data, "customers")["config"]["meta"]["prefect"] = {"enable_assets": False}


@pytest.fixture(scope="module")
def shop_build(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    project = make_shop_copy(tmp_path_factory.mktemp("assets"))
    # Model level: customers opts out in its YAML config (the internal/ folder opts out in
    # dbt_project.yml already).
    edit_yaml(project / "models" / "marts" / "_marts.yml", disable_customers_assets)
    seen = build_in_flow(project, ["build"])
    seen["project"] = project
    return seen


def test_every_materialized_seed_model_and_snapshot_is_an_asset_with_the_official_key(shop_build: dict[str, Any]) -> None:
    succeeded = materializations(shop_build["events"])
    assert sorted(succeeded) == sorted(
        KEY.format(path)
        for path in [
            "main_raw/raw_customers", "main_raw/raw_orders", "main_raw/raw_products",
            "main_staging/stg_customers", "main_staging/stg_orders", "main_staging/stg_payments",
            "main_staging/stg_products", "main_marts/orders", "main_marts/product_revenue",
            "main_marts/daily_order_summary", "main_snapshots/customers_snapshot",
        ]
    )
    assert materializations(shop_build["events"], "failed") == {}


def test_asset_properties_come_from_the_node(shop_build: dict[str, Any]) -> None:
    succeeded = materializations(shop_build["events"])
    orders = succeeded[KEY.format("main_marts/orders")].resource
    assert orders["prefect.resource.name"] == "shop.main_marts.orders"
    assert orders["prefect.asset.description"] == "One row per order with its amount and what has been paid for it."
    assert json.loads(orders["prefect.asset.owners"]) == ["data-eng", "finance"]
    products = succeeded[KEY.format("main_raw/raw_products")].resource
    assert json.loads(products["prefect.asset.owners"]) == ["data-eng", "merchandising"]
    revenue = succeeded[KEY.format("main_marts/product_revenue")].resource
    assert json.loads(revenue["prefect.asset.owners"]) == ["merchandising"]


def test_materializations_are_made_by_dbt_in_the_node_task_run(shop_build: dict[str, Any]) -> None:
    runs = by_name(task_runs(shop_build["flow_run_id"]))
    event = materializations(shop_build["events"])[KEY.format("main_marts/orders")]
    related = {(r.role, r.id) for r in event.related}
    assert ("asset-materialized-by", "dbt") in related
    assert ("task-run", f"prefect.task-run.{runs['model orders'].id}") in related
    assert ("flow-run", f"prefect.flow-run.{shop_build['flow_run_id']}") in related


def test_lineage_follows_depends_on_through_ephemeral_models_and_from_sources(shop_build: dict[str, Any]) -> None:
    succeeded = materializations(shop_build["events"])
    upstream = {key: related_assets(event) for key, event in succeeded.items()}
    assert upstream[KEY.format("main_marts/orders")] == {
        KEY.format("main_staging/stg_orders"),
        KEY.format("main_staging/stg_products"),
        KEY.format("main_staging/stg_payments"),  # through the ephemeral int_order_payments
    }
    assert upstream[KEY.format("main_staging/stg_payments")] == {KEY.format("payments_app/payments")}
    assert upstream[KEY.format("main_raw/raw_orders")] == set()
    assert upstream[KEY.format("main_snapshots/customers_snapshot")] == {KEY.format("main_staging/stg_customers")}


def event_shape(events: list[Any]) -> list[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    """Each asset event as (name, resource, upstream assets, materialized-by): what Prefect's
    asset graph is built from; the run-context related resources differ by construction."""
    shapes = []
    for event in events:
        assets = tuple(sorted(r.id for r in event.related if r.role == "asset"))
        by = tuple(sorted(r.id for r in event.related if r.role == "asset-materialized-by"))
        shapes.append((event.event, event.resource.id, assets, by))
    return sorted(shapes)


def test_no_write_json_gives_the_same_asset_keys_and_lineage(tmp_path: Path) -> None:
    normal = build_in_flow(make_shop_copy(tmp_path / "normal"), ["build"])
    project = make_shop_copy(tmp_path / "without-json")
    without_json = build_in_flow(project, ["build", "--no-write-json"])
    assert not (project / "target" / "manifest.json").exists()
    assert len(materializations(without_json["events"])) == 12  # seeds, models and the snapshot
    assert event_shape(without_json["events"]) == event_shape(normal["events"])


def test_asset_events_are_those_of_prefects_own_materializing_tasks_for_the_same_graph(
    shop_build: dict[str, Any],
) -> None:
    from prefect.assets import Asset, materialize

    ours = [e for e in shop_build["events"] if not e.event.startswith("dbt_prefect.")]
    graph = {key: sorted(related_assets(event)) for key, event in materializations(ours).items()}
    assert len(graph) == 11

    @flow(name="prefect-materialize-reference")
    def reference() -> Any:
        # One @materialize task per dbt asset, with its upstream assets as asset_deps.
        for key, upstream in graph.items():
            materialize(Asset(key=key), asset_deps=[Asset(key=u) for u in upstream], by="dbt")(lambda: None)()
        return FlowRunContext.get().flow_run.id

    reference_run = reference()
    theirs = poll(lambda: asset_events(reference_run), lambda events: len(events) >= len(event_shape(ours)))
    assert event_shape(ours) == event_shape(theirs)
    # The source is read by one model, so it is referenced once; every model's upstream
    # models are referenced by each of their children, as Prefect does.
    referenced = [e.resource.id for e in ours if e.event == "prefect.asset.referenced"]
    assert referenced.count(KEY.format("payments_app/payments")) == 1
    assert len(referenced) == sum(len(upstream) for upstream in graph.values())
    source = next(e.resource for e in ours if e.resource.id == KEY.format("payments_app/payments"))
    assert source["prefect.resource.name"] == "shop.payments_app.payments"
    assert json.loads(source["prefect.asset.owners"]) == ["payments-team"]
    assert source["prefect.asset.description"].startswith("One row per payment attempt")


def test_an_upstream_outside_the_selection_is_referenced_with_the_properties_it_is_materialized_with(
    shop_build: dict[str, Any],
) -> None:
    seen = build_in_flow(shop_build["project"], ["run", "--select", "orders"])
    referenced = [e.resource for e in seen["events"] if e.event == "prefect.asset.referenced"]
    assert sorted(r.id for r in referenced) == sorted(
        KEY.format(path) for path in ("main_staging/stg_orders", "main_staging/stg_products", "main_staging/stg_payments")
    )
    built = materializations(shop_build["events"])
    for resource in referenced:
        assert dict(resource) == dict(built[resource.id].resource)


def test_materialization_metadata_has_node_info_and_execution_facts(shop_build: dict[str, Any]) -> None:
    succeeded = materializations(shop_build["events"])
    payload = succeeded[KEY.format("main_raw/raw_orders")].payload
    assert payload["unique_id"] == "seed.shop.raw_orders"
    assert payload["node_name"] == "raw_orders"
    assert payload["node_path"] == "raw_orders.csv"
    assert payload["resource_type"] == "seed"
    assert payload["materialized"] == "seed"
    assert payload["node_status"] == "success"
    assert payload["meta"] == {"owner": "data-eng"}
    assert payload["node_relation"] == {
        "database": "shop", "schema": "main_raw", "alias": "raw_orders",
        "relation_name": '"shop"."main_raw"."raw_orders"',
    }
    started = dt.datetime.fromisoformat(payload["node_started_at"])
    finished = dt.datetime.fromisoformat(payload["node_finished_at"])
    assert started <= finished
    assert 0 < payload["execution_time"] < 60
    assert payload["rows_affected"] == 30
    assert payload["message"] == "INSERT 30"
    view = succeeded[KEY.format("main_staging/stg_orders")].payload
    assert view["materialized"] == "view" and view["message"] == "OK"
    assert "rows_affected" not in view  # DuckDB reports none for views


def test_enable_assets_false_on_a_folder_or_a_model_removes_the_asset_but_keeps_the_task_run(shop_build: dict[str, Any]) -> None:
    keys = set(materializations(shop_build["events"]))
    assert KEY.format("main_marts/customers") not in keys  # model-level switch
    assert KEY.format("main_internal/internal_order_audit") not in keys  # folder-level switch
    runs = by_name(task_runs(shop_build["flow_run_id"]))
    assert state_of(runs["model customers"]) == ("COMPLETED", "Completed")
    assert state_of(runs["model internal_order_audit"]) == ("COMPLETED", "Completed")
    # A disabled asset is not anybody's upstream either.
    referenced = {e.resource.id for e in shop_build["events"] if e.event == "prefect.asset.referenced"}
    assert KEY.format("main_marts/customers") not in referenced


def test_enable_assets_false_on_a_source_drops_it_from_lineage(shop_project: Path) -> None:
    def disable_source(data: dict[str, Any]) -> None:
        data["sources"][0]["tables"][0]["config"]["meta"]["prefect"] = {"enable_assets": False}

    edit_yaml(shop_project / "models" / "staging" / "_sources.yml", disable_source)
    seen = build_in_flow(shop_project, ["run", "--select", "stg_payments"])
    succeeded = materializations(seen["events"])
    assert list(succeeded) == [KEY.format("main_staging/stg_payments")]
    assert related_assets(succeeded[KEY.format("main_staging/stg_payments")]) == set()
    assert not [e for e in seen["events"] if e.event == "prefect.asset.referenced"]


def test_enable_assets_false_for_the_whole_project(shop_project: Path) -> None:
    def disable_project(data: dict[str, Any]) -> None:
        data["seeds"]["shop"]["+meta"] = {"owner": "data-eng", "prefect": {"enable_assets": False}}

    edit_yaml(shop_project / "dbt_project.yml", disable_project)
    seen = build_in_flow(shop_project, ["seed"])
    assert seen["result"].success
    assert seen["events"] == []
    assert len(task_runs(seen["flow_run_id"])) == 3


def test_failed_nodes_emit_failed_materializations_and_skipped_nodes_none(shop_project: Path) -> None:
    (shop_project / "models" / "staging" / "stg_products.sql").write_text("select missing_column from {{ ref('raw_products') }}\n")
    seen = build_in_flow(shop_project, ["build", "--select", "+stg_products+", "--exclude", "customers_snapshot"])
    failed = materializations(seen["events"], "failed")
    assert list(failed) == [KEY.format("main_staging/stg_products")]
    assert failed[KEY.format("main_staging/stg_products")].payload["node_status"] == "error"
    succeeded = materializations(seen["events"])
    assert KEY.format("main_marts/orders") not in succeeded  # skipped: no event at all
    assert KEY.format("main_marts/product_revenue") not in succeeded
    assert KEY.format("main_raw/raw_products") in succeeded


def test_disable_assets_turns_every_asset_off_and_keeps_task_runs(shop_project: Path) -> None:
    seen = build_in_flow(shop_project, ["seed"], disable_assets=True)
    assert seen["events"] == []
    assert sorted(run.name for run in task_runs(seen["flow_run_id"])) == [
        "seed raw_customers", "seed raw_orders", "seed raw_products",
    ]


def test_no_asset_is_emitted_outside_a_flow(shop_project: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

    started = dt.datetime.now(dt.timezone.utc)
    assert runner_for(shop_project).invoke(["seed"]).success
    finished = dt.datetime.now(dt.timezone.utc)
    from support.prefect_api import poll

    def emitted() -> list[Any]:
        with get_client(sync_client=True) as client:
            return client.read_events(
                filter=EventFilter(
                    occurred=EventOccurredFilter(since=started, until=finished),
                    event=EventNameFilter(prefix=["prefect.asset."]),
                    resource=EventResourceFilter(id=[KEY.format("main_raw/raw_orders")]),
                ),
                limit=50,
            ).events

    # Give any stray event time to arrive before concluding there is none.
    assert poll(emitted, lambda events: bool(events), timeout=3) == []


def test_compiled_code_is_appended_to_the_description(shop_project: Path) -> None:
    seen = build_in_flow(shop_project, ["build", "--select", "+stg_orders", "--exclude", "test_type:data"], include_compiled_code=True)
    description = materializations(seen["events"])[KEY.format("main_staging/stg_orders")].resource["prefect.asset.description"]
    head, code = description.split("\n\n### Compiled code\n```sql\n")
    assert head == "Orders with normalised status values."
    assert code.endswith("\n```")
    assert '"shop"."main_raw"."raw_orders"' in code
    assert "{{" not in code


def test_a_model_checked_by_its_unit_test_first_still_carries_its_compiled_code(shop_project: Path) -> None:
    seen = build_in_flow(shop_project, ["build", "--select", "+customers"], include_compiled_code=True)
    key = KEY.format("main_marts/customers")
    checks = events_of_flow_run(seen["flow_run_id"], "dbt_prefect.asset.check.")
    unit = next(e for e in checks if e.payload["unique_id"].startswith("unit_test.") and e.resource.id == key)
    built = materializations(seen["events"])[key]
    # dbt runs the unit test before the model: its check event names the asset first.
    assert unit.occurred < built.occurred
    assert "### Compiled code" not in unit.resource["prefect.asset.description"]
    description = built.resource["prefect.asset.description"]
    assert "\n\n### Compiled code\n```sql\n" in description
    assert '"shop"."main_staging"."stg_customers"' in description


def test_an_over_long_model_keeps_a_valid_description(shop_project: Path) -> None:
    long_sql = "select 1 as id\n" + "".join(f"-- padding line {i:04d} to make the compiled code long\n" for i in range(120))
    (shop_project / "models" / "marts" / "long_model.sql").write_text(long_sql)
    (shop_project / "models" / "marts" / "wordy_model.sql").write_text("select 1 as id\n")
    (shop_project / "models" / "marts" / "_long.yml").write_text(
        yaml.safe_dump({"models": [
            {"name": "long_model", "description": "A model with a lot of SQL."},
            {"name": "wordy_model", "description": "word " * 700},
        ]})
    )
    seen = build_in_flow(shop_project, ["run", "--select", "long_model", "wordy_model"], include_compiled_code=True)
    succeeded = materializations(seen["events"])
    long_description = succeeded[KEY.format("main_marts/long_model")].resource["prefect.asset.description"]
    assert long_description.startswith("A model with a lot of SQL.\n\n_Compiled code omitted")
    assert "### Compiled code" not in long_description
    wordy = succeeded[KEY.format("main_marts/wordy_model")].resource["prefect.asset.description"]
    assert len(wordy) <= MAX_DESCRIPTION_LENGTH
    assert TRUNCATION_MARKER in wordy


def test_the_dbt_macro_and_python_resolve_meta_prefect_alike(shop_project: Path) -> None:
    def disable_source(data: dict[str, Any]) -> None:
        data["sources"][0]["tables"][0]["config"]["meta"]["prefect"] = {"enable_assets": False}

    edit_yaml(shop_project / "models" / "marts" / "_marts.yml", disable_customers_assets)
    edit_yaml(shop_project / "models" / "staging" / "_sources.yml", disable_source)
    args = ["--project-dir", str(shop_project), "--profiles-dir", str(shop_project)]
    manifest = dbtRunner().invoke(["parse", *args]).result
    lines: list[str] = []

    def collect(event: Any) -> None:
        if event.info.name == "JinjaLogInfo" and event.info.msg.startswith("dbt_prefect.prefect_config "):
            lines.append(event.info.msg.removeprefix("dbt_prefect.prefect_config "))

    result = dbtRunner(manifest=manifest, callbacks=[collect]).invoke(["run-operation", "dbt_prefect.log_prefect_configs", *args])
    assert result.success
    from_macro = {row["unique_id"]: row["prefect"] for row in map(json.loads, lines)}
    catalog = NodeCatalog(manifest)
    from_python = {unique_id: dict(catalog.get(unique_id).prefect_config) for unique_id in from_macro}
    assert from_macro == from_python
    assert len(from_macro) == 15  # 10 models, 3 seeds, 1 snapshot, 1 source
    assert dict(PREFECT_CONFIG_DEFAULTS) == {
        "enable_assets": True, "row_count": True, "count_view_rows": False, "columns": True,
    }
    assets_off = {**PREFECT_CONFIG_DEFAULTS, "enable_assets": False}
    assert from_macro["model.shop.customers"] == assets_off
    assert from_macro["model.shop.internal_order_audit"] == assets_off
    assert from_macro["source.shop.payments_app.payments"] == assets_off
    assert from_macro["model.shop.stg_orders"] == {**PREFECT_CONFIG_DEFAULTS, "count_view_rows": True}
    assert from_macro["model.shop.orders"] == dict(PREFECT_CONFIG_DEFAULTS)


@pytest.mark.parametrize(
    ("relation_name", "key", "name"),
    [
        ('"dev"."main_marts"."product_metrics"', "duckdb://dev/main_marts/product_metrics", "dev.main_marts.product_metrics"),
        ('"my db"."main"."weird#name?"', "duckdb://mydb/main/weirdname", "my db.main.weird#name?"),
    ],
)
def test_asset_keys_and_names_follow_the_official_rule(relation_name: str, key: str, name: str) -> None:
    assert default_asset_key("duckdb", relation_name) == key
    assert asset_name(relation_name) == name


def test_asset_keys_are_cut_at_prefects_limit() -> None:
    relation = '"db"."schema"."' + "x" * 600 + '"'
    assert len(default_asset_key("postgres", relation)) == 512


@pytest.mark.parametrize("base_length", [0, 10, 2400, 2600, 10_000])
@pytest.mark.parametrize("code_length", [0, 100, 3000])
def test_descriptions_never_exceed_the_limit(base_length: int, code_length: int) -> None:
    description = asset_description("d" * base_length, "c" * code_length if code_length else None)
    assert description is None or len(description) <= MAX_DESCRIPTION_LENGTH
    if base_length + code_length + 40 < MAX_DESCRIPTION_LENGTH and code_length:
        assert description.endswith("```") and "### Compiled code" in description
    if base_length > MAX_DESCRIPTION_LENGTH:
        assert TRUNCATION_MARKER in description


def test_under_fail_fast_asset_events_follow_dbts_final_result(shop_project: Path) -> None:
    # A model slow enough to still be running when stg_products fails next to it: dbt lets
    # it finish (it logs OK) and then reports it skipped.
    (shop_project / "models" / "marts" / "slow_total.sql").write_text(
        "{{ config(materialized='table') }}\n"
        "select sum(i) as n from range(0, 400000000) t(i)\n"
        "where exists (select 1 from {{ ref('raw_customers') }})\n"
    )
    (shop_project / "models" / "staging" / "stg_products.sql").write_text(
        "select no_such_column from {{ ref('raw_products') }}\n"
    )
    # Only slow_total may be running when stg_products fails: dbt-duckdb's fail-fast cancel
    # races any thread that is just closing its connection ("Connection already closed!"),
    # in plain dbt too, so the selection leaves no other node in flight.
    seen = build_in_flow(
        shop_project,
        ["build", "--fail-fast", "--threads", "4", "--select", "raw_customers", "raw_products",
         "slow_total", "stg_products", "--resource-type", "seed", "--resource-type", "model"],
    )
    final = {r.node.unique_id: str(r.status) for r in seen["result"].result.results}
    assert final["model.shop.stg_products"] == "error"
    assert final["model.shop.slow_total"] == "skipped"
    by_key = {
        f"duckdb://{r.node.relation_name.replace(chr(34), '').replace('.', '/')}": status
        for r in seen["result"].result.results
        if getattr(r.node, "relation_name", None)
        for status in [str(r.status)]
    }
    for event in seen["events"]:
        if event.event.startswith("prefect.asset.materialization."):
            outcome = event.event.rsplit(".", 1)[1]
            assert (outcome, by_key[event.resource.id]) in {("succeeded", "success"), ("failed", "error")}, event
    built = {e.resource.id for e in seen["events"] if e.event.startswith("prefect.asset.materialization.")}
    assert not [key for key, status in by_key.items() if status == "skipped" and key in built]
    assert KEY.format("main_staging/stg_products") in built


class WarehouseKeys(DbtPrefectTranslator):
    """A custom scheme: `warehouse://<schema>/<table>` keys and `dbt: <name>` task runs."""

    def asset_key(self, node: Any, adapter_type: str) -> str:
        return f"warehouse://{node.schema}/{node.alias}"

    def task_run_name(self, node: Any) -> str:
        return f"dbt: {node.name}"

    def materialization_metadata(self, node: Any, metadata: Any) -> dict[str, Any]:
        return {"unique_id": metadata["unique_id"], "team": "analytics"}


def test_a_custom_translator_names_task_runs_keys_assets_lineage_and_checks(shop_project: Path) -> None:
    # Cautious: only the tests whose every parent is selected (relationships to stg_customers are not).
    seen = build_in_flow(
        shop_project, ["build", "--select", "+orders", "--indirect-selection", "cautious"], translator=WarehouseKeys()
    )
    assert seen["result"].success
    runs = by_name(task_runs(seen["flow_run_id"]))
    assert "dbt: orders" in runs and "dbt: stg_orders" in runs and "model orders" not in runs
    built = materializations(seen["events"])
    orders = built["warehouse://main_marts/orders"]
    assert related_assets(orders) == {
        "warehouse://main_staging/stg_orders",
        "warehouse://main_staging/stg_products",
        "warehouse://main_staging/stg_payments",
    }
    assert orders.payload == {"unique_id": "model.shop.orders", "team": "analytics"}
    assert ("task-run", f"prefect.task-run.{runs['dbt: orders'].id}") in {(r.role, r.id) for r in orders.related}
    assert all(key.startswith("warehouse://") for key in built)
    referenced = {e.resource.id for e in seen["events"] if e.event == "prefect.asset.referenced"}
    assert "warehouse://payments_app/payments" in referenced
    checks = events_of_flow_run(seen["flow_run_id"], "dbt_prefect.asset.check.")
    unique_orders = next(e for e in checks if e.payload["test_name"] == "unique_orders_order_id")
    assert unique_orders.resource.id == "warehouse://main_marts/orders"
    with get_client(sync_client=True) as client:
        (report,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["dbt-shop-build"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[seen["flow_run_id"]]),
            )
        )
    assert "| orders | model | success |" in report.data and "`warehouse://main_marts/orders`" in report.data


def test_meta_prefect_asset_key_overrides_the_key_of_one_resource(shop_project: Path) -> None:
    def override(data: dict[str, Any]) -> None:
        model_entry(data, "orders")["config"]["meta"]["prefect"] = {"asset_key": "bigquery://analytics/marts/orders"}

    edit_yaml(shop_project / "models" / "marts" / "_marts.yml", override)
    seen = build_in_flow(shop_project, ["build", "--select", "+product_revenue"])
    built = materializations(seen["events"])
    assert "bigquery://analytics/marts/orders" in built
    assert KEY.format("main_marts/orders") not in built
    assert "bigquery://analytics/marts/orders" in related_assets(built[KEY.format("main_marts/product_revenue")])
