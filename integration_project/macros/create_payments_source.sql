{#- Returns the SQL for an on-run-start hook that lands the `payments_app.payments`
    source table, the way an EL tool would before dbt runs. Idempotent: it only
    creates the schema and table when they are missing, so later runs keep the
    rows (and their `_loaded_at`) from the first run.

    The rows are generated from the order totals below (orders 1-25 of the
    raw_orders seed, in cents). Orders 26-30 are not paid yet, orders 3, 6 and 13
    are paid in two parts (a 10.00 gift card plus the rest), and order 14 is
    underpaid by 5.00, so `internal_order_audit` has a few rows to show. -#}
{% macro create_payments_source(schema_name='payments_app', table_name='payments') %}
    {%- set order_totals_cents = [
        2580, 1990, 5990, 1750, 2490, 5980, 2970, 1780, 1590, 2600,
        1290, 3980, 5990, 4980, 3500, 2990, 2670, 1980, 3180, 5160,
        1990, 1300, 5990, 2990, 2490
    ] -%}
    {%- set split_orders = [3, 6, 13] -%}
    {%- set underpaid_orders = [14] -%}
    {%- set methods = ['credit_card', 'bank_transfer', 'coupon'] -%}
    {%- set rows = [] -%}
    {%- for total in order_totals_cents -%}
        {%- set order_id = loop.index -%}
        {%- set amount = total - 500 if order_id in underpaid_orders else total -%}
        {%- if order_id in split_orders -%}
            {%- do rows.append((order_id, 1, 'gift_card', 1000)) -%}
            {%- do rows.append((order_id, 2, methods[order_id % 3], amount - 1000)) -%}
        {%- else -%}
            {%- do rows.append((order_id, 1, methods[order_id % 3], amount)) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- set relation = api.Relation.create(
        database=target.database, schema=schema_name, identifier=table_name
    ) -%}
    create schema if not exists {{ relation.without_identifier() }};
    create table if not exists {{ relation }} as
    select
        cast(row_number() over (order by order_id, part) as integer) as id,
        order_id,
        payment_method,
        amount_cents,
        timestamp '2024-01-03 00:00:00'
            + to_hours(cast((order_id - 1) * 37 + 18 + part as integer)) as created_at,
        current_timestamp as _loaded_at
    from (
        values
        {%- for r in rows %}
        ({{ r[0] }}, {{ r[1] }}, '{{ r[2] }}', {{ r[3] }}){{ "," if not loop.last }}
        {%- endfor %}
    ) as landed(order_id, part, payment_method, amount_cents)
{% endmacro %}
