{#- Returns the defaults of the package var `dbt_prefect`, the project-wide switches; read by
    prefect_settings:
    - row_counts, columns: collect_metadata may record row counts and column schemas;
      `false` turns them off everywhere, whatever `meta.prefect` says.
    - run_history: record_run_history appends one row per executed node (opt-in).
    - run_history_schema: the history table's schema; none means the target's schema.
    - run_history_table: the history table's name. -#}
{% macro prefect_settings_defaults() %}
    {{ return({
        'row_counts': true,
        'columns': true,
        'run_history': false,
        'run_history_schema': none,
        'run_history_table': 'dbt_prefect_run_history',
    }) }}
{% endmacro %}
