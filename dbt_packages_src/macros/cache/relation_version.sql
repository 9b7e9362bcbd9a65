{#- A cheap version of the data in a relation, as a string that changes when its rows
    change: dbt-prefect's orchestrator cache folds it into the key of every node that
    reads the relation (a source it does not build). `none` means "unknown", and an
    unknown version never counts as unchanged: the nodes that read it run.
    Adapters without an implementation below answer none. -#}
{% macro relation_version(relation) %}
    {{ return(adapter.dispatch('relation_version', 'dbt_prefect')(relation)) }}
{% endmacro %}

{% macro default__relation_version(relation) %}
    {{ return(none) }}
{% endmacro %}

{#- DuckDB: the row count and the sum of every row's hash, in one scan of the relation.
    Any insert, delete or update changes it (short of a 64-bit hash collision). Columnar
    scans are fast, but the cost grows with the relation: one full read per build. -#}
{% macro duckdb__relation_version(relation) %}
    {%- set sql -%}
/* dbt_prefect.relation_version */
select cast(count(*) as varchar) || ':' || coalesce(cast(sum(hash(t)) as varchar), '0') from {{ relation }} as t
    {%- endset -%}
    {{ return(run_query(sql).columns[0].values()[0]) }}
{% endmacro %}

{#- PostgreSQL: the row count with the max and the sum of the rows' xmin (the id of the
    transaction that wrote each row version), in one scan that reads no column data.
    An insert or update writes rows with a new xmin, a delete changes the count.
    Tables, partitioned tables and materialized views only: a view has no xmin of its
    own, so its version is unknown. The statistics counters (pg_stat_all_tables) would
    cost nothing, but another session's writes reach them up to a second late, which
    would let a build miss rows that just landed. -#}
{% macro postgres__relation_version(relation) %}
    {%- set kind_sql -%}
/* dbt_prefect.relation_version */
select c.relkind from pg_catalog.pg_class c where c.oid = to_regclass('{{ relation.render() | replace("'", "''") }}')
    {%- endset -%}
    {%- set kinds = run_query(kind_sql).columns[0].values() -%}
    {%- if kinds | length == 0 or kinds[0] not in ('r', 'p', 'm') -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set sql -%}
/* dbt_prefect.relation_version */
select count(*)::text || ':' || coalesce(max(xmin::text::bigint), 0)::text || ':' || coalesce(sum(xmin::text::bigint), 0)::text
from {{ relation }}
    {%- endset -%}
    {{ return(run_query(sql).columns[0].values()[0]) }}
{% endmacro %}
