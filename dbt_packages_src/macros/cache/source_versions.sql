{#- Run by dbt-prefect's orchestrator cache (`dbt run-operation dbt_prefect.source_versions`)
    before a cached build: the data version of each relation it is given, logged as one
    JSON line that the orchestrator reads from dbt's events.
    `relations`: a list of {id, database, schema, identifier, loaded_at_field}. A source
    with a loaded_at_field (freshness configured) is versioned by its latest load,
    max(loaded_at_field); any other relation by relation_version. A relation that does
    not exist has no version (none). -#}
{% macro source_versions(relations) %}
    {%- set versions = {} -%}
    {%- for given in relations -%}
        {%- set relation = adapter.get_relation(database=given.database, schema=given.schema, identifier=given.identifier) -%}
        {%- if relation is none -%}
            {%- do versions.update({given.id: none}) -%}
        {%- elif given.loaded_at_field -%}
            {%- set sql -%}
/* dbt_prefect.source_versions */
select cast(max({{ given.loaded_at_field }}) as {{ dbt.type_string() }}) from {{ relation }}
            {%- endset -%}
            {%- set latest = run_query(sql).columns[0].values()[0] -%}
            {%- do versions.update({given.id: none if latest is none else 'loaded_at:' ~ latest}) -%}
        {%- else -%}
            {%- set version = dbt_prefect.relation_version(relation) -%}
            {%- do versions.update({given.id: none if version is none else 'rows:' ~ version}) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- do log('dbt_prefect.source_versions ' ~ tojson(versions), info=false) -%}
{% endmacro %}
