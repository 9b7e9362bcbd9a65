{#- Logs one JSON line per seed, model, snapshot and source with its resolved Prefect
    settings. Run it with `dbt run-operation dbt_prefect.log_prefect_configs` to see how
    `meta.prefect` resolves across a project; the test suite uses it to check that the
    dbt package and the Python runner agree. -#}
{% macro log_prefect_configs() %}
    {%- if execute -%}
        {%- set nodes = graph.nodes.values() | list + graph.sources.values() | list -%}
        {%- for node in nodes if node.resource_type in ['seed', 'model', 'snapshot', 'source'] -%}
            {%- do log('dbt_prefect.prefect_config ' ~ tojson({'unique_id': node.unique_id, 'prefect': dbt_prefect.prefect_config(node)}), info=True) -%}
        {%- endfor -%}
    {%- endif -%}
{% endmacro %}
