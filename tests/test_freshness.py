"""dbt's source freshness, run in-process on a parsed manifest (freshness.source_freshness),
and the nodes it stops (freshness.stale_upstream): real dbt on DuckDB, no Prefect server.

The project copy lands its sources before dbt runs, as an EL tool would:
payments_app.payments last loaded 30 hours ago (error after 24 hours), crm.customers just
now (warn after 12 hours), crm.notes without a freshness config, and crm.visits with a
loaded_at_field that does not exist.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dbt.cli.main import dbtRunner
from dbt.contracts.graph.manifest import Manifest

from dbt_prefect.errors import DbtCommandFailed
from dbt_prefect.model.nodes import NodeCatalog
from dbt_prefect.orchestrator.freshness import SourceFreshness, source_freshness, stale_upstream
from dbt_prefect.runner.invocation import DBT_INVOCATION_LOCK
from support.projects import make_shop_copy
from support.sources import land_sources

PAYMENTS = "source.shop.payments_app.payments"
CUSTOMERS = "source.shop.crm.customers"
NOTES = "source.shop.crm.notes"
VISITS = "source.shop.crm.visits"


def dbt_args(project: Path) -> list[str]:
    return ["--project-dir", str(project), "--profiles-dir", str(project)]


def parse(project: Path) -> Manifest:
    with DBT_INVOCATION_LOCK:
        parsed = dbtRunner().invoke(["parse", *dbt_args(project)], log_level="none")
    assert parsed.success, parsed.exception
    assert isinstance(parsed.result, Manifest)
    return parsed.result


def selected_below(manifest: Manifest, project: Path, selector: str) -> set[str]:
    """What dbt itself selects with ``selector``, e.g. a source and everything below it."""
    args = ["ls", *dbt_args(project), "--select", selector, "--resource-type", "all"]
    with DBT_INVOCATION_LOCK:
        listed = dbtRunner(manifest=manifest).invoke([*args, "--output", "json"], log_level="none")
    assert listed.success, listed.exception
    return {json.loads(line)["unique_id"] for line in listed.result}


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest, dict[str, SourceFreshness]]:
    project = make_shop_copy(tmp_path_factory.mktemp("freshness"))
    land_sources(project)
    manifest = parse(project)
    with DBT_INVOCATION_LOCK:
        freshness = source_freshness(manifest, dbt_args(project))
    return project, manifest, freshness


def test_dbt_reports_each_source_with_a_freshness_config(checked) -> None:
    project, _, freshness = checked
    # crm.notes has no freshness config: dbt does not check it, so it is not there.
    assert NOTES in checked[1].sources
    assert {uid: f.status for uid, f in freshness.items()} == {
        PAYMENTS: "error",
        CUSTOMERS: "pass",
        VISITS: "runtime error",
    }
    assert {uid for uid, f in freshness.items() if f.stale} == {PAYMENTS, VISITS}
    # dbt writes sources.json into the target path, as `dbt source freshness` does.
    assert (project / "target" / "sources.json").is_file()


def test_a_stale_source_carries_the_threshold_it_crossed_and_its_age(checked) -> None:
    payments = checked[2][PAYMENTS]
    assert payments.criteria == "error after 24 hours"
    assert payments.max_loaded_at is not None and payments.max_loaded_at.tzinfo is not None
    assert payments.age_seconds is not None and 30 * 3600 <= payments.age_seconds < 30 * 3600 + 170
    assert payments.error is None


def test_a_fresh_source_carries_its_configured_thresholds(checked) -> None:
    customers = checked[2][CUSTOMERS]
    assert (customers.stale, customers.criteria) == (False, "warn after 12 hours")
    assert customers.age_seconds is not None and 0 <= customers.age_seconds < 600


def test_a_source_dbt_could_not_measure_is_stale_with_dbts_error(checked) -> None:
    visits = checked[2][VISITS]
    assert (visits.max_loaded_at, visits.age_seconds, visits.criteria) == (None, None, "error after 1 day")
    assert visits.error is not None and "_no_such_column" in visits.error


def test_exactly_the_nodes_below_a_stale_source_are_named(checked) -> None:
    project, manifest, freshness = checked
    everything = [*manifest.nodes, *manifest.sources, *manifest.unit_tests]
    reasons = stale_upstream(NodeCatalog(manifest), everything, freshness)
    # dbt's own graph selection is the reference: each stale source and everything below it.
    below = selected_below(manifest, project, "source:payments_app.payments+ source:crm.visits+")
    assert set(reasons) == below - {PAYMENTS, VISITS}
    # Through the ephemeral int_order_payments to the marts; the source's own tests too.
    assert {
        "model.shop.stg_payments",
        "model.shop.int_order_payments",
        "model.shop.orders",
        "model.shop.daily_order_summary",
        "test.shop.source_unique_payments_app_payments_id.1498b22a8b",
        "unit_test.shop.customers.test_customers_segments_and_lifetime_value",
    } <= set(reasons)
    # The fresh source's model and the seeds' own branch are not named.
    for fresh in ("model.shop.stg_crm_customers", "model.shop.stg_orders", "model.shop.stg_customers"):
        assert fresh not in reasons


def test_the_reason_names_each_stale_source_with_what_dbt_found(checked) -> None:
    _, manifest, freshness = checked
    selected = ["model.shop.orders", "model.shop.stg_crm_visits", "model.shop.visit_orders"]
    assert stale_upstream(NodeCatalog(manifest), selected, freshness) == {
        "model.shop.orders": (
            "upstream source payments_app.payments is stale (error after 24 hours; last loaded 30.0 hours ago)"
        ),
        "model.shop.stg_crm_visits": (
            "upstream source crm.visits is stale (freshness check failed with a runtime error)"
        ),
        "model.shop.visit_orders": (
            "upstream sources are stale: crm.visits (freshness check failed with a runtime error), "
            "payments_app.payments (error after 24 hours; last loaded 30.0 hours ago)"
        ),
    }


def test_a_failing_on_run_start_hook_is_a_clear_error(tmp_path: Path) -> None:
    project = make_shop_copy(tmp_path)
    dbt_project = project / "dbt_project.yml"
    dbt_project.write_text(
        dbt_project.read_text().replace(
            '  - "{{ create_payments_source() }}"',
            '  - "{{ create_payments_source() }}"\n  - "select * from no_such_table"',
        )
    )
    manifest = parse(project)
    with DBT_INVOCATION_LOCK, pytest.raises(DbtCommandFailed) as failed:
        source_freshness(manifest, dbt_args(project))
    message = str(failed.value)
    assert message.startswith("dbt source freshness did not check payments_app.payments: shop.on-run-start.1 failed")
    assert "no_such_table" in message
    assert "source_freshness_run_project_hooks" in message


def test_an_unknown_target_is_a_clear_error(checked) -> None:
    project, manifest, _ = checked
    with DBT_INVOCATION_LOCK, pytest.raises(DbtCommandFailed) as failed:
        source_freshness(manifest, [*dbt_args(project), "--target", "nope"])
    message = str(failed.value)
    assert message.startswith(
        "dbt source freshness failed, so only_fresh_sources cannot tell which sources are stale: "
    )
    assert "The profile 'shop' does not have a target named 'nope'." in message
    assert message.endswith("\n(fix the error above, or run the build without only_fresh_sources)")
