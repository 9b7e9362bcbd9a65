{#- Returns the run history table: the vars `dbt_prefect: {run_history_schema, run_history_table}`,
    by default `<target schema>.dbt_prefect_run_history` in the target database. Read by
    record_run_history in on-run-end. -#}
{% macro run_history_relation() %}
    {%- set settings = dbt_prefect.prefect_settings() -%}
    {{ return(api.Relation.create(
        database=target.database,
        schema=settings.run_history_schema or target.schema,
        identifier=settings.run_history_table,
        type='table',
    )) }}
{% endmacro %}
