{#- Returns what the Python runner knows about the current run, or {} under plain dbt:
    {'flow_run_id': ..., 'nodes': {unique_id: {'task_run_id': ..., 'row_count': ...}}}.
    It asks by logging the line `dbt_prefect.record.run_context_request`; the runner's dbt
    callback answers before log() returns, in the invocation's environment variable
    DBT_PREFECT_RUN_CONTEXT. Runs in on-run-end (run_history_rows, under record_run_history).
    It lives in runner/, not run_history/: it is the package's side of the question-and-answer
    protocol with the Python runner (its strings: python/dbt_prefect/model/package_contract.py),
    not part of the history table, and any macro that needs the run's Prefect ids asks through
    it. -#}
{% macro prefect_run_context() %}
    {%- if not execute -%}
        {{ return({}) }}
    {%- endif -%}
    {%- do log('dbt_prefect.record.run_context_request') -%}
    {%- set raw = env_var('DBT_PREFECT_RUN_CONTEXT', '') -%}
    {%- set context = fromjson(raw) if raw else none -%}
    {{ return(context if context is mapping else {}) }}
{% endmacro %}
