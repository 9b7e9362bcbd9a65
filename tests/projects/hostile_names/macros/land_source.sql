{#- Returns the SQL for an on-run-start hook that lands the source table
    "app.v2-data"."events_raw", as an EL tool would. Idempotent. -#}
{% macro land_source() %}
create schema if not exists "app.v2-data";
create table if not exists "app.v2-data"."events_raw" as select 1 as id, 'a' as kind
{% endmacro %}
