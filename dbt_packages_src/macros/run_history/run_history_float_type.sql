{#- Returns the type of the run history's execution_time: a double-precision float, so the
    seconds dbt reports are stored exactly. -#}
{% macro run_history_float_type() %}
    {{ return(adapter.dispatch('run_history_float_type', 'dbt_prefect')()) }}
{% endmacro %}

{% macro default__run_history_float_type() %}
    {{ return(dbt.type_float()) }}
{% endmacro %}
