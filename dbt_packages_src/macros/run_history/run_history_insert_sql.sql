{#- Returns an insert of run_history_rows into the run history table. Every value is cast to
    its column type, so multi-row VALUES type-check on Postgres too. Run by record_run_history
    in on-run-end, once per batch of 500 rows. -#}
{% macro run_history_insert_sql(relation, rows) %}
    {{ return(adapter.dispatch('run_history_insert_sql', 'dbt_prefect')(relation, rows)) }}
{% endmacro %}

{% macro default__run_history_insert_sql(relation, rows) %}
    {%- set columns = dbt_prefect.run_history_columns() -%}
    {%- set tuples = [] -%}
    {%- for row in rows -%}
        {%- set values = [] -%}
        {%- for name, type in columns -%}
            {%- set value = row.get(name) -%}
            {%- if name == 'row_count' and value is none and row.get('count_relation') -%}
                {%- do values.append('(select count(*) from ' ~ row.count_relation ~ ')') -%}
            {%- else -%}
                {%- do values.append('cast(' ~ dbt_prefect.sql_literal(value) ~ ' as ' ~ type ~ ')') -%}
            {%- endif -%}
        {%- endfor -%}
        {%- do tuples.append('(' ~ values | join(', ') ~ ')') -%}
    {%- endfor -%}
    {%- set names = [] -%}
    {%- for name, type in columns -%}
        {%- do names.append(name) -%}
    {%- endfor -%}
    {{ return('insert into ' ~ relation ~ ' (' ~ names | join(', ') ~ ') values\n' ~ tuples | join(',\n')) }}
{% endmacro %}
