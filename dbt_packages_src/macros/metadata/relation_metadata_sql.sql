{#- Returns one query that reads a relation's row count and its columns together, as rows of
    (row_count, column_name, data_type) in column order. Every row carries the count, and a
    relation whose columns cannot be read still yields one row. `row_count` and `columns`
    (booleans) leave either half out. Run by collect_metadata, once per relation; the
    adapter-specific part is reading the columns. -#}
{% macro relation_metadata_sql(relation, row_count=true, columns=true) %}
    {%- set counted = '(select count(*) from ' ~ relation ~ ')' if row_count else 'cast(null as ' ~ dbt.type_bigint() ~ ')' -%}
    {%- if not columns -%}
        {{ return('/* dbt_prefect.relation_metadata */ select ' ~ counted ~ ' as row_count, null as column_name, null as data_type') }}
    {%- endif -%}
    {{ return(adapter.dispatch('relation_metadata_sql', 'dbt_prefect')(relation, counted)) }}
{% endmacro %}

{#- Any adapter with an ANSI information_schema. `counted` is the row count's SQL expression. -#}
{% macro default__relation_metadata_sql(relation, counted) %}
    {%- set sql -%}
/* dbt_prefect.relation_metadata */
select counted.row_count, cols.column_name, cols.data_type
from (select {{ counted }} as row_count) as counted
left join information_schema.columns as cols
    on {% if relation.database %}cols.table_catalog = '{{ relation.database | replace("'", "''") }}' and {% endif -%}
    cols.table_schema = '{{ relation.schema | replace("'", "''") }}'
    and cols.table_name = '{{ relation.identifier | replace("'", "''") }}'
order by cols.ordinal_position
    {%- endset -%}
    {{ return(sql) }}
{% endmacro %}
