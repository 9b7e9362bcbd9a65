{#- Returns a SQL literal for a Python value: null, a number, or a quoted string (datetimes
    in ISO format). Not specific to dbt-prefect; today run_history_insert_sql calls it, in
    on-run-end, to write run history rows. -#}
{% macro sql_literal(value) %}
    {%- if value is none -%}
        {{ return('null') }}
    {%- elif value is number and value is not boolean -%}
        {{ return(value ~ '') }}
    {%- elif value is boolean -%}
        {{ return('true' if value else 'false') }}
    {%- elif value.isoformat is defined -%}
        {{ return("'" ~ value.isoformat() ~ "'") }}
    {%- else -%}
        {{ return("'" ~ (value ~ '') | replace("'", "''") ~ "'") }}
    {%- endif -%}
{% endmacro %}
