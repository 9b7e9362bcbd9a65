{#- Returns the type of the run history's execution_time: a double-precision float, so the
    seconds dbt reports are stored exactly. Read by run_history_columns in on-run-end;
    default__ is the adapter's float type, duckdb__ below says DOUBLE. -#}
{% macro run_history_float_type() %}
    {{ return(adapter.dispatch('run_history_float_type', 'dbt_prefect')()) }}
{% endmacro %}

{% macro default__run_history_float_type() %}
    {{ return(dbt.type_float()) }}
{% endmacro %}

{#- DuckDB: FLOAT is single precision there; DOUBLE keeps dbt's execution times exact. -#}
{% macro duckdb__run_history_float_type() %}
    {{ return('double') }}
{% endmacro %}
