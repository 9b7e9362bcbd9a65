"""PrefectDbtOrchestrator(cache=CacheConfig(...)) per node on DuckDB: nodes unchanged in code
and data since their last successful build are answered by the cache. Real dbt, a real
Prefect server; which nodes must rebuild is what dbt itself selects (dbt ls)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dbt.cli.main import dbtRunner

from dbt_prefect import CacheConfig
from support.orchestration import orchestrate
from support.prefect_api import by_name, logs, message_of, state_of, task_runs
from support.projects import make_shop_copy, without_dbt_prefect_package

pytestmark = pytest.mark.usefixtures("prefect_server")

# What the default CacheConfig never caches: tests, snapshots, unit tests, incremental models.
EXCLUDED_TYPES = {"test", "snapshot", "unit_test"}
INCREMENTAL = {"model.shop.daily_order_summary"}
FAILING_MODEL = """-- depends_on: {{ ref('raw_products') }}
{% if env_var('SHOP_BREAK_PRODUCTS', 'no') == 'yes' %}
select * from no_such_table
{% else %}
select id as product_id, sku, name as product_name, category, cast(price_cents / 100.0 as decimal(10, 2)) as unit_price
from {{ ref('raw_products') }}
{% endif %}
"""


def dbt_ls(project: Path, selector: str) -> set[str]:
    listed = dbtRunner().invoke(
        ["ls", "--select", selector, "--output", "json", "--output-keys", "unique_id",
         "--project-dir", str(project), "--profiles-dir", str(project), "--log-level", "none"]
    )
    assert listed.exception is None, listed.exception
    return {json.loads(line)["unique_id"] for line in listed.result}


def land_a_payment(project: Path) -> None:
    """New rows in payments_app.payments, a source with freshness: its max(loaded_at_field) moves."""
    with duckdb.connect(str(project.parent / "shop.duckdb")) as con:
        con.execute(
            "insert into payments_app.payments (id, order_id, payment_method, amount_cents, created_at, _loaded_at)"
            " select max(id) + 1, 1, 'coupon', 100, timestamp '2024-01-03', current_timestamp from payments_app.payments"
        )


def cached_build(project: Path, store: Path, **build: Any) -> Any:
    run = orchestrate(
        project,
        None,
        build=build,
        cache=CacheConfig(key_storage=store),
        raise_on_failure=False,
    )
    assert run.error is None, run.error
    return run


def statuses(run: Any) -> dict[str, str]:
    return {unique_id: r["status"] for unique_id, r in run.result.items()}


def cacheable(run: Any) -> set[str]:
    return {
        unique_id
        for unique_id, r in run.result.items()
        if unique_id.split(".")[0] not in EXCLUDED_TYPES and unique_id not in INCREMENTAL
    }


def flow_lines(run: Any) -> list[str]:
    return [line.message for line in logs(run.flow_run_id) if line.task_run_id is None]


@pytest.fixture()
def shop(tmp_path: Path) -> tuple[Path, Path]:
    project = make_shop_copy(tmp_path)
    (project / "models" / "staging" / "stg_products.sql").write_text(FAILING_MODEL)
    # A source without freshness: its version is relation_version's (a scan), not max(loaded_at).
    sources = project / "models" / "staging" / "_sources.yml"
    sources.write_text(sources.read_text() + "\n  - name: crm\n    schema: crm\n    tables:\n      - name: notes\n")
    (project / "models" / "staging" / "stg_notes.sql").write_text("select id as note_id from {{ source('crm', 'notes') }}\n")
    with duckdb.connect(str(tmp_path / "shop.duckdb")) as con:
        con.execute("create schema crm; create table crm.notes as select 1 as id")
    return project, tmp_path / "cache"


def test_an_unchanged_project_is_answered_by_the_cache_and_a_failed_node_runs_again(
    shop: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    project, store = shop
    monkeypatch.setenv("SHOP_BREAK_PRODUCTS", "yes")
    first = cached_build(project, store)
    first_statuses = statuses(first)
    assert "The cache holds no earlier build of this project: every node runs" in flow_lines(first)
    assert "cached" not in first_statuses.values()
    broken = dbt_ls(project, "stg_products+")
    assert first_statuses["model.shop.stg_products"] == "error"
    failed_or_skipped = {u for u, s in first_statuses.items() if s in ("error", "skipped")}
    assert failed_or_skipped == broken & set(first_statuses)

    # Nothing changed but the cause of the failure (not part of any key): the failed node
    # and what it skipped run again, every other cacheable node is answered by the cache.
    monkeypatch.setenv("SHOP_BREAK_PRODUCTS", "no")
    second = cached_build(project, store)
    second_statuses = statuses(second)
    rerun = {u for u in cacheable(second) if second_statuses[u] != "cached"}
    assert rerun == (broken & cacheable(second))
    assert all(second_statuses[u] == "success" for u in rerun)
    assert {u for u in set(second_statuses) - cacheable(second) if second_statuses[u] == "cached"} == set()
    runs = by_name(task_runs(second.flow_run_id))
    assert state_of(runs["model stg_customers"]) == ("COMPLETED", "Cached")
    assert message_of(runs["model stg_customers"]).startswith("cached: unchanged in code and data since its build at ")
    assert state_of(runs["model stg_products"]) == ("COMPLETED", "Completed")
    lines = flow_lines(second)
    assert "Cache miss for model stg_products: no earlier successful build in the cache" in lines

    # Now everything that can be cached is.
    third = cached_build(project, store)
    third_statuses = statuses(third)
    assert {third_statuses[u] for u in cacheable(third)} == {"cached"}
    excluded = set(third_statuses) - cacheable(third)
    assert {third_statuses[u] for u in excluded} == {"success"}
    hits, excluded_count = len(cacheable(third)), len(excluded)
    assert f"0 miss(es), {excluded_count} excluded" in next(
        line for line in flow_lines(third) if line.startswith("Cache at ")
    )
    assert hits == sum(1 for s in third_statuses.values() if s == "cached")
    # The result dict is the official one: a cached node has its status and its task run.
    assert third.result["model.shop.customers"]["status"] == "cached"
    assert "task_run_id" in third.result["model.shop.customers"]


def test_code_and_data_changes_rebuild_exactly_what_reads_them(shop: tuple[Path, Path]) -> None:
    project, store = shop
    cached_build(project, store)

    # One model's SQL: it and its descendants, nothing else.
    model = project / "models" / "staging" / "stg_customers.sql"
    model.write_text(model.read_text() + "\n-- reviewed\n")
    edited = cached_build(project, store)
    rebuilt = {u for u in cacheable(edited) if statuses(edited)[u] != "cached"}
    assert rebuilt == dbt_ls(project, "stg_customers+") & cacheable(edited)
    assert any(
        line == "Cache miss for model stg_customers: changed since its last build: its code" for line in flow_lines(edited)
    )

    # New rows in a source with freshness configured (its max(loaded_at_field) moves).
    land_a_payment(project)
    loaded = cached_build(project, store)
    rebuilt = {u for u in cacheable(loaded) if statuses(loaded)[u] != "cached"}
    assert rebuilt == dbt_ls(project, "source:payments_app.payments+") & cacheable(loaded)
    assert (
        "Cache miss for model stg_payments: changed since its last build: new data in source payments_app.payments"
        in flow_lines(loaded)
    )

    # New rows in a source without freshness (dbt_prefect.relation_version notices them).
    with duckdb.connect(str(project.parent / "shop.duckdb")) as con:
        con.execute("insert into crm.notes values (2)")
    noted = cached_build(project, store)
    rebuilt = {u for u in cacheable(noted) if statuses(noted)[u] != "cached"}
    assert rebuilt == {"model.shop.stg_notes"}

    # An update that keeps the row count still changes the version.
    with duckdb.connect(str(project.parent / "shop.duckdb")) as con:
        con.execute("update crm.notes set id = 3 where id = 2")
    updated = cached_build(project, store)
    assert {u for u in cacheable(updated) if statuses(updated)[u] != "cached"} == {"model.shop.stg_notes"}


def test_without_the_dbt_package_source_versions_still_see_new_data(shop: tuple[Path, Path]) -> None:
    """A user who switches from prefect-dbt keeps a cache that sees data, with no dbt package."""
    project, store = shop
    without_dbt_prefect_package(project)
    first = cached_build(project, store)
    assert not any("cannot see new data" in line for line in flow_lines(first))
    assert {u for u in cacheable(first) if statuses(first)[u] == "cached"} == set()
    unchanged = cached_build(project, store)
    assert {u for u in cacheable(unchanged) if statuses(unchanged)[u] != "cached"} == set()

    with duckdb.connect(str(project.parent / "shop.duckdb")) as con:
        con.execute("insert into crm.notes values (2)")
    noted = cached_build(project, store)
    assert {u for u in cacheable(noted) if statuses(noted)[u] != "cached"} == {"model.shop.stg_notes"}

    land_a_payment(project)
    loaded = cached_build(project, store)
    rebuilt = {u for u in cacheable(loaded) if statuses(loaded)[u] != "cached"}
    assert rebuilt == dbt_ls(project, "source:payments_app.payments+") & cacheable(loaded)
    assert (
        "Cache miss for model stg_payments: changed since its last build: new data in source payments_app.payments"
        in flow_lines(loaded)
    )


def test_full_refresh_ignores_the_cache_and_a_corrupt_store_means_a_full_build(
    shop: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    project, store = shop
    cached_build(project, store)
    refreshed = cached_build(project, store, full_refresh=True)
    assert "cached" not in statuses(refreshed).values()
    assert "Cache miss for model customers: full refresh: the cache is not read" in flow_lines(refreshed)
    # What the full refresh built is cached for the next build.
    after = cached_build(project, store)
    assert {statuses(after)[u] for u in cacheable(after)} == {"cached"}

    document = next(store.rglob("*.json"))
    document.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="dbt_prefect"):
        corrupt = cached_build(project, store)
    assert "cached" not in statuses(corrupt).values()
    warning = next(r.getMessage() for r in caplog.records if "cannot use the cache" in r.getMessage())
    assert warning.startswith(f"dbt-prefect cannot use the cache at {document}: it is not a dbt-prefect cache document")
    assert warning.endswith("Every node runs, and the cache is written anew after the build.")
    # Written anew: the build after it is answered by the cache again.
    again = cached_build(project, store)
    assert {statuses(again)[u] for u in cacheable(again)} == {"cached"}


def test_plan_predicts_what_run_build_does(shop: tuple[Path, Path]) -> None:
    from dbt_prefect import ExecutionMode, PrefectDbtOrchestrator, PrefectDbtSettings

    project, store = shop
    cached_build(project, store)
    model = project / "models" / "marts" / "orders.sql"
    model.write_text(model.read_text() + "\n-- reviewed\n")
    orchestrator = PrefectDbtOrchestrator(
        settings=PrefectDbtSettings(project_dir=project, profiles_dir=project),
        execution_mode=ExecutionMode.PER_NODE,
        cache=CacheConfig(key_storage=store),
    )
    plan = orchestrator.plan()
    predicted = plan.cache_predictions
    built = cached_build(project, store)
    assert set(predicted) == set(built.result)
    for unique_id, result in built.result.items():
        expected = {"hit": "cached", "miss": "success", "excluded": "success"}[predicted[unique_id]]
        assert result["status"] == expected, unique_id
    assert {u for u, p in predicted.items() if p == "miss"} == dbt_ls(project, "orders+") & cacheable(built)
    hits = sum(1 for p in predicted.values() if p == "hit")
    misses = sum(1 for p in predicted.values() if p == "miss")
    excluded = sum(1 for p in predicted.values() if p == "excluded")
    assert str(plan).splitlines()[-1] == f"  Cache: {hits} hit(s), {misses} miss(es), {excluded} excluded"
