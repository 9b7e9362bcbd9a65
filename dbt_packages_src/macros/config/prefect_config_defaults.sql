{#- Returns dbt-prefect's default `meta.prefect` settings, the single documented default set.
    The Python runner carries the same defaults (nodes.py: PREFECT_CONFIG_DEFAULTS); a test
    checks that the two agree. -#}
{% macro prefect_config_defaults() %}
    {{ return({'enable_assets': true}) }}
{% endmacro %}
