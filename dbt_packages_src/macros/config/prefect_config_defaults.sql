{#- Returns dbt-prefect's default `meta.prefect` settings, the single documented default set.
    Read by prefect_config, wherever a node's settings are resolved. The Python runner
    carries the same defaults (nodes.py: PREFECT_CONFIG_DEFAULTS); tests check that the two
    agree (test_package_contract.py, test_assets.py).
    - enable_assets: the resource is a Prefect asset.
    - row_count: collect_metadata records the relation's row count (tables, incremental
      models, seeds, snapshots).
    - count_view_rows: views are counted too (counting a view runs its query).
    - columns: collect_metadata records the relation's columns. -#}
{% macro prefect_config_defaults() %}
    {{ return({'enable_assets': true, 'row_count': true, 'count_view_rows': false, 'columns': true}) }}
{% endmacro %}
