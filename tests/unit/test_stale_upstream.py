"""Which selected nodes sit downstream of a stale source, and the reason each is given
(freshness.stale_upstream), on a real dbt Manifest shaped like the integration project:

    source payments_app.payments -> stg_payments (view) -> int_order_payments (ephemeral) -> orders
    seed raw_orders              -> stg_orders (view) ----------------------------------> orders
    source crm.customers         -> stg_customers (view) -> customers <- orders

with a test on the payments source, a test on stg_payments and a unit test of orders.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from unit_manifest import generic_test, manifest, model, seed, source, unit_test

from dbt_prefect.model.nodes import NodeCatalog
from dbt_prefect.orchestrator.freshness import SourceFreshness, stale_upstream

PAYMENTS = "source.shop.payments_app.payments"
CRM = "source.shop.crm.customers"
SEED = "seed.shop.raw_orders"
STG_PAYMENTS = "model.shop.stg_payments"
INT_PAYMENTS = "model.shop.int_order_payments"
STG_ORDERS = "model.shop.stg_orders"
STG_CUSTOMERS = "model.shop.stg_customers"
ORDERS = "model.shop.orders"
CUSTOMERS = "model.shop.customers"
TEST_SOURCE = "test.shop.source_unique_payments_app_payments_id.0a1b2c"
TEST_STG = "test.shop.not_null_stg_payments_payment_id.3d4e5f"
UNIT_ORDERS = "unit_test.shop.orders.test_orders_amount_paid"
EVERYTHING = (
    PAYMENTS,
    CRM,
    SEED,
    STG_PAYMENTS,
    INT_PAYMENTS,
    STG_ORDERS,
    STG_CUSTOMERS,
    ORDERS,
    CUSTOMERS,
    TEST_SOURCE,
    TEST_STG,
    UNIT_ORDERS,
)

LOADED_AT = datetime(2024, 1, 3, tzinfo=UTC)
PAYMENTS_REASON = "upstream source payments_app.payments is stale (error after 24 hours; last loaded 30.0 hours ago)"


@pytest.fixture()
def catalog() -> NodeCatalog:
    return NodeCatalog(
        manifest(
            source("payments_app", "payments", "payments"),
            source("crm", "customers", "customers"),
            seed("raw_orders"),
            model("stg_payments", [PAYMENTS], materialized="view"),
            model("int_order_payments", [STG_PAYMENTS], materialized="ephemeral"),
            model("stg_orders", [SEED], materialized="view"),
            model("stg_customers", [CRM], materialized="view"),
            model("orders", [STG_ORDERS, INT_PAYMENTS]),
            model("customers", [STG_CUSTOMERS, ORDERS]),
            generic_test(TEST_SOURCE, PAYMENTS, [PAYMENTS]),
            generic_test(TEST_STG, STG_PAYMENTS, [STG_PAYMENTS]),
            unit_test(UNIT_ORDERS, ORDERS),
        )
    )


def outcome(unique_id: str, status: str, hours: float | None = None, criteria: str | None = None) -> SourceFreshness:
    return SourceFreshness(
        unique_id=unique_id,
        status=status,
        max_loaded_at=LOADED_AT if hours is not None else None,
        age_seconds=hours * 3600 if hours is not None else None,
        criteria=criteria,
    )


def payments_error() -> SourceFreshness:
    return outcome(PAYMENTS, "error", 30, "error after 24 hours")


def test_error_and_runtime_error_are_stale_pass_and_warn_are_not() -> None:
    assert outcome(PAYMENTS, "error").stale
    assert outcome(PAYMENTS, "runtime error").stale
    assert not outcome(PAYMENTS, "warn").stale
    assert not outcome(PAYMENTS, "pass").stale


def test_every_selected_node_below_a_stale_source_is_named_with_the_threshold_and_age(catalog: NodeCatalog) -> None:
    reasons = stale_upstream(catalog, EVERYTHING, {PAYMENTS: payments_error()})
    # Through the ephemeral int_order_payments to orders, then on to customers; the tests
    # of the source and of stg_payments, and the unit test of orders, too.
    assert reasons == {
        STG_PAYMENTS: PAYMENTS_REASON,
        INT_PAYMENTS: PAYMENTS_REASON,
        ORDERS: PAYMENTS_REASON,
        CUSTOMERS: PAYMENTS_REASON,
        TEST_SOURCE: PAYMENTS_REASON,
        TEST_STG: PAYMENTS_REASON,
        UNIT_ORDERS: PAYMENTS_REASON,
    }


def test_only_selected_nodes_are_named_even_below_an_unselected_one(catalog: NodeCatalog) -> None:
    # stg_payments and the ephemeral model are not selected; orders still reads the source through them.
    reasons = stale_upstream(catalog, [STG_ORDERS, ORDERS, PAYMENTS], {PAYMENTS: payments_error()})
    assert reasons == {ORDERS: PAYMENTS_REASON}


def test_fresh_warned_and_unchecked_sources_name_nothing(catalog: NodeCatalog) -> None:
    assert stale_upstream(catalog, EVERYTHING, {}) == {}
    assert stale_upstream(catalog, EVERYTHING, {PAYMENTS: outcome(PAYMENTS, "pass", 1, "warn after 12 hours")}) == {}
    assert stale_upstream(catalog, EVERYTHING, {PAYMENTS: outcome(PAYMENTS, "warn", 13, "warn after 12 hours")}) == {}


def test_two_stale_sources_are_named_in_the_order_of_their_names(catalog: NodeCatalog) -> None:
    freshness = {
        PAYMENTS: payments_error(),
        CRM: outcome(CRM, "error", 3, "error after 1 hour"),
    }
    reasons = stale_upstream(catalog, [CUSTOMERS, ORDERS, STG_CUSTOMERS], freshness)
    assert reasons == {
        CUSTOMERS: (
            "upstream sources are stale: crm.customers (error after 1 hour; last loaded 3.0 hours ago), "
            "payments_app.payments (error after 24 hours; last loaded 30.0 hours ago)"
        ),
        ORDERS: PAYMENTS_REASON,
        STG_CUSTOMERS: "upstream source crm.customers is stale (error after 1 hour; last loaded 3.0 hours ago)",
    }


def test_a_source_dbt_could_not_check_counts_as_stale(catalog: NodeCatalog) -> None:
    failed = SourceFreshness(PAYMENTS, "runtime error", None, None, "warn after 30 days", error="Binder Error")
    assert stale_upstream(catalog, [STG_PAYMENTS], {PAYMENTS: failed}) == {
        STG_PAYMENTS: "upstream source payments_app.payments is stale (freshness check failed with a runtime error)"
    }


@pytest.mark.parametrize(
    ("seconds", "age"),
    [(90, "1.5 minutes"), (3600, "1.0 hours"), (47.5 * 3600, "47.5 hours"), (48 * 3600, "2.0 days")],
)
def test_the_age_reads_in_minutes_hours_or_days(catalog: NodeCatalog, seconds: float, age: str) -> None:
    stale = SourceFreshness(PAYMENTS, "error", LOADED_AT, seconds, "error after 1 minute")
    assert stale_upstream(catalog, [STG_PAYMENTS], {PAYMENTS: stale}) == {
        STG_PAYMENTS: f"upstream source payments_app.payments is stale (error after 1 minute; last loaded {age} ago)"
    }


def test_a_source_with_no_load_time_says_so(catalog: NodeCatalog) -> None:
    # dbt reports 0001-01-01 when the loaded_at query finds no value, e.g. in an empty table.
    empty = SourceFreshness(PAYMENTS, "error", datetime(1, 1, 1, tzinfo=UTC), 6.4e10, "error after 24 hours")
    assert stale_upstream(catalog, [STG_PAYMENTS], {PAYMENTS: empty}) == {
        STG_PAYMENTS: "upstream source payments_app.payments is stale (error after 24 hours; no load time recorded)"
    }
