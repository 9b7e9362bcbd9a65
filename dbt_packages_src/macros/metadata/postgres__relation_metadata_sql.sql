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
