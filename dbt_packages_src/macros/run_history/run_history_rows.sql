{#- Returns one row (a mapping over run_history_columns) per executed node in on-run-end's
    `results`; run hooks are left out. Called by record_run_history in on-run-end. Under the
    Python runner the flow run, the task run and the row count collect_metadata recorded come
    from prefect_run_context. Otherwise `row_count` is left to the insert: `count_relation`
    names the relation to count, when metadata_switches allows counting it and the node
    succeeded. -#}
{% macro run_history_rows(results) %}
    {%- set context = dbt_prefect.prefect_run_context() -%}
    {%- set known = context.get('nodes') or {} -%}
    {%- set rows = [] -%}
    {%- for result in results if result.node.resource_type ~ '' != 'operation' -%}
        {%- set node = result.node -%}
        {%- set prefect = known.get(node.unique_id) or {} -%}
        {%- set starts = result.timing | map(attribute='started_at') | reject('none') | list -%}
        {%- set ends = result.timing | map(attribute='completed_at') | reject('none') | list -%}
        {%- set response = result.adapter_response or {} -%}
        {%- set row_count = prefect.get('row_count') -%}
        {%- set count_relation = none -%}
        {%- if row_count is none and result.status ~ '' == 'success' and node.relation_name
              and dbt_prefect.metadata_switches(node).row_count -%}
            {%- set count_relation = node.relation_name -%}
        {%- endif -%}
        {%- do rows.append({
            'invocation_id': invocation_id,
            'flow_run_id': context.get('flow_run_id'),
            'task_run_id': prefect.get('task_run_id'),
            'unique_id': node.unique_id,
            'resource_type': node.resource_type ~ '',
            'status': result.status ~ '',
            'started_at': starts[0] if starts else none,
            'finished_at': ends[-1] if ends else none,
            'execution_time': result.execution_time,
            'rows_affected': response.get('rows_affected'),
            'row_count': row_count,
            'count_relation': count_relation,
            'message': result.message,
        }) -%}
    {%- endfor -%}
    {{ return(rows) }}
{% endmacro %}
