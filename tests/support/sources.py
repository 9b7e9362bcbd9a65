"""Source tables landed in a project copy before dbt runs, as an EL tool would: some
fresh, one stale (payments_app.payments, 30 hours old, error after 24 hours), one that
dbt cannot measure (crm.visits)."""

from __future__ import annotations

from pathlib import Path

import duckdb

CRM_SOURCES = """
  - name: crm
    schema: crm
    config:
      loaded_at_field: _loaded_at
    tables:
      - name: customers
        config:
          freshness:
            warn_after: {count: 12, period: hour}
      - name: notes
      - name: visits
        config:
          loaded_at_field: _no_such_column
          freshness:
            error_after: {count: 1, period: day}
"""


def land_sources(project: Path) -> None:
    """Payments 30 hours old and past its new error_after; fresh CRM tables beside them.

    The project's on-run-start hook creates payments only when it is missing, so the old
    rows stay."""
    sources_yml = project / "models" / "staging" / "_sources.yml"
    sources_yml.write_text(
        sources_yml.read_text().replace(
            "warn_after: {count: 30, period: day}",
            "warn_after: {count: 12, period: hour}\n            error_after: {count: 24, period: hour}",
        )
        + CRM_SOURCES
    )
    staging, marts = project / "models" / "staging", project / "models" / "marts"
    (staging / "stg_crm_customers.sql").write_text("select id as customer_id from {{ source('crm', 'customers') }}\n")
    (staging / "stg_crm_visits.sql").write_text("select id as visit_id from {{ source('crm', 'visits') }}\n")
    (marts / "visit_orders.sql").write_text("select * from {{ ref('stg_crm_visits') }}, {{ ref('orders') }}\n")
    with duckdb.connect(str(project.parent / "shop.duckdb")) as con:
        con.execute(
            "create schema payments_app;"
            " create table payments_app.payments as"
            " select 1 as id, 1 as order_id, 'coupon' as payment_method, 100 as amount_cents,"
            " timestamp '2024-01-03' as created_at, current_timestamp - interval 30 hour as _loaded_at;"
            " create schema crm;"
            " create table crm.customers as select 1 as id, current_timestamp as _loaded_at;"
            " create table crm.notes as select 1 as id, current_timestamp as _loaded_at;"
            " create table crm.visits as select 1 as id, current_timestamp as _loaded_at;"
        )
