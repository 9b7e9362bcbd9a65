{#- Returns {'row_count': bool, 'columns': bool}: what collect_metadata records for a node.
    `node` is `model` in a hook or `result.node` in on-run-end. Nothing is recorded for
    resources that are not relations or whose assets are off (`enable_assets: false`);
    views are counted only with `count_view_rows: true`. Both the project-wide var
    (prefect_settings) and the node's `meta.prefect` (prefect_config) must allow it. Read by
    collect_metadata (post-hook) and run_history_rows (on-run-end). -#}
{% macro metadata_switches(node) %}
    {%- set config = dbt_prefect.prefect_config(node) -%}
    {%- set settings = dbt_prefect.prefect_settings() -%}
    {%- set materialized = (node.config or {}).get('materialized') -%}
    {%- set relational = node.resource_type in ['model', 'seed', 'snapshot'] and materialized != 'ephemeral' -%}
    {%- set enabled = relational and config.get('enable_assets') -%}
    {%- set counted = config.get('row_count') and (materialized != 'view' or config.get('count_view_rows')) -%}
    {{ return({
        'row_count': true if (enabled and settings.row_counts and counted) else false,
        'columns': true if (enabled and settings.columns and config.get('columns')) else false,
    }) }}
{% endmacro %}
