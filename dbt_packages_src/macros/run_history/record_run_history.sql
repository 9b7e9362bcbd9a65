{#- The package's on-run-end hook (dbt_project.yml), so it runs for every project that
    installs the package, under plain dbt too. With the var `dbt_prefect: {run_history: true}`
    it appends one row per executed node to the run history table (run_history_relation),
    creating it first if needed. Otherwise it does nothing. Returns no SQL. -#}
{% macro record_run_history(results) %}
    {%- if execute and dbt_prefect.prefect_settings().run_history -%}
        {%- set relation = dbt_prefect.run_history_relation() -%}
        {%- do dbt_prefect.create_run_history_table(relation) -%}
        {%- set rows = dbt_prefect.run_history_rows(results) -%}
        {%- for batch in rows | batch(500) -%}
            {%- call statement('dbt_prefect_run_history', auto_begin=true) -%}
                {{ dbt_prefect.run_history_insert_sql(relation, batch) }}
            {%- endcall -%}
        {%- endfor -%}
        {#- on-run-end hooks run outside dbt's transactions: commit explicitly, or Postgres
            would roll the rows back when dbt closes the connection. -#}
        {%- do adapter.commit() -%}
    {%- endif -%}
{% endmacro %}
