{#- Returns a node's resolved Prefect settings: the defaults, overlaid with `meta.prefect`.
    `node` is a graph node (`graph.nodes[...]`, `graph.sources[...]`) or `model` in a hook.
    Layers, least specific first: a source's source-level meta, the node's meta, then its
    config.meta (where dbt has already applied project, folder and file inheritance).
    Runs at compile time; the Python runner applies the same rule (nodes.py). -#}
{% macro prefect_config(node) %}
    {%- set resolved = dbt_prefect.prefect_config_defaults() -%}
    {%- set layers = [] -%}
    {%- if node.resource_type == 'source' -%}
        {%- do layers.append((node.source_meta or {}).get('prefect')) -%}
    {%- endif -%}
    {%- do layers.append((node.meta or {}).get('prefect')) -%}
    {%- do layers.append(((node.config or {}).get('meta') or {}).get('prefect')) -%}
    {%- for layer in layers if layer is mapping -%}
        {%- do resolved.update(layer) -%}
    {%- endfor -%}
    {{ return(resolved) }}
{% endmacro %}
