{#- A post-hook for models, seeds and snapshots: `+post-hook: "{{ dbt_prefect.collect_metadata() }}"`.
    Under PrefectDbtRunner it runs one query on the relation just built (its row count and
    its columns, as metadata_switches allows) and logs the answer as a debug line
    `dbt_prefect.record.metadata {json}`. The runner reads that line before dbt reports the
    node finished, and puts the facts on the node's own asset materialization event.
    Returns no SQL. Outside the runner (plain `dbt build`), it does nothing. -#}
{% macro collect_metadata() %}
    {%- if execute and env_var('DBT_PREFECT_COLLECT_METADATA', '') == '1' -%}
        {%- set wanted = dbt_prefect.metadata_switches(model) -%}
        {%- if wanted.row_count or wanted.columns -%}
            {%- set sql = dbt_prefect.relation_metadata_sql(this, wanted.row_count, wanted.columns) -%}
            {%- set record = dbt_prefect.metadata_record(model.unique_id, run_query(sql), wanted) -%}
            {%- do log('dbt_prefect.record.metadata ' ~ tojson(record)) -%}
        {%- endif -%}
    {%- endif -%}
{% endmacro %}
