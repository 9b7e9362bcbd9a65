{#- Creates the run history schema and table if they do not exist yet; safe to run every time.
    Runs in on-run-end, before the rows are inserted, and leaves the transaction open for them
    (record_run_history commits). -#}
{% macro create_run_history_table(relation) %}
    {{ return(adapter.dispatch('create_run_history_table', 'dbt_prefect')(relation)) }}
{% endmacro %}

{% macro default__create_run_history_table(relation) %}
    {%- do adapter.create_schema(relation) -%}
    {%- set columns = [] -%}
    {%- for name, type in dbt_prefect.run_history_columns() -%}
        {%- do columns.append(name ~ ' ' ~ type) -%}
    {%- endfor -%}
    {%- call statement('dbt_prefect_create_run_history', auto_begin=true) -%}
        create table if not exists {{ relation }} ({{ columns | join(', ') }})
    {%- endcall -%}
{% endmacro %}
