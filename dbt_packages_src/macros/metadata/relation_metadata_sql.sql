{#- Returns one query that reads a relation's row count and its columns together, as rows of
    (row_count, column_name, data_type) in column order. Every row carries the count, and a
    relation whose columns cannot be read still yields one row. `row_count` and `columns`
    (booleans) leave either half out. Run by collect_metadata, once per relation; the
    adapter-specific part is reading the columns: default__ (information_schema), duckdb__
    and postgres__ below. -#}
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

{#- DuckDB: the columns come from pragma_table_info, which reads one relation, instead of
    information_schema, which loads every attached catalog. Types keep their precision,
    e.g. DECIMAL(10,2). -#}
{% macro duckdb__relation_metadata_sql(relation, counted) %}
    {%- set sql -%}
/* dbt_prefect.relation_metadata */
select counted.row_count, cols.name as column_name, cols.type as data_type
from (select {{ counted }} as row_count) as counted
left join pragma_table_info('{{ relation.render() | replace("'", "''") }}') as cols on true
order by cols.cid
    {%- endset -%}
    {{ return(sql) }}
{% endmacro %}

{#- Postgres: the columns come from pg_attribute, with format_type giving the declared type,
    e.g. character varying(20) or numeric(10,2); information_schema drops length and precision. -#}
{% macro postgres__relation_metadata_sql(relation, counted) %}
    {%- set sql -%}
/* dbt_prefect.relation_metadata */
select counted.row_count, cols.attname as column_name, pg_catalog.format_type(cols.atttypid, cols.atttypmod) as data_type
from (select {{ counted }} as row_count) as counted
left join pg_catalog.pg_attribute as cols
    on cols.attrelid = '{{ relation.include(database=false) | replace("'", "''") }}'::regclass
    and cols.attnum > 0
    and not cols.attisdropped
order by cols.attnum
    {%- endset -%}
    {{ return(sql) }}
{% endmacro %}
