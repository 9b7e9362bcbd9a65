{#- Returns the run history table's columns, in order, as (name, type) pairs; read in on-run-end
    by create_run_history_table and run_history_insert_sql. -#}
{% macro run_history_columns() %}
    {{ return([
        ('invocation_id', dbt.type_string()),
        ('flow_run_id', dbt.type_string()),
        ('task_run_id', dbt.type_string()),
        ('unique_id', dbt.type_string()),
        ('resource_type', dbt.type_string()),
        ('status', dbt.type_string()),
        ('started_at', dbt.type_timestamp()),
        ('finished_at', dbt.type_timestamp()),
        ('execution_time', dbt_prefect.run_history_float_type()),
        ('rows_affected', dbt.type_bigint()),
        ('row_count', dbt.type_bigint()),
        ('message', dbt.type_string()),
    ]) }}
{% endmacro %}
