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
