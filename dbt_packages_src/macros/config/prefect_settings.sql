{#- Returns the project-wide dbt-prefect switches: prefect_settings_defaults(), overlaid with
    the var `dbt_prefect` (set it in dbt_project.yml `vars:` or with
    `--vars '{dbt_prefect: {run_history: true}}'`). Runs wherever a switch is read. -#}
{% macro prefect_settings() %}
    {%- set settings = dbt_prefect.prefect_settings_defaults() -%}
    {%- set given = var('dbt_prefect', {}) -%}
    {%- if given is mapping -%}
        {%- do settings.update(given) -%}
    {%- endif -%}
    {{ return(settings) }}
{% endmacro %}
