{#- DuckDB: FLOAT is single precision there; DOUBLE keeps dbt's execution times exact. -#}
{% macro duckdb__run_history_float_type() %}
    {{ return('double') }}
{% endmacro %}
