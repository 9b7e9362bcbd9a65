{#- Returns the record collect_metadata logs for one relation:
    {'unique_id', 'row_count' (if counted), 'columns': [{'name', 'data_type'}] (if asked)},
    from the (row_count, column_name, data_type) rows of relation_metadata_sql. Called by
    collect_metadata, in the node's post-hook. -#}
{% macro metadata_record(unique_id, table, wanted) %}
    {%- set record = {'unique_id': unique_id} -%}
    {%- if wanted.row_count -%}
        {%- set first = table.rows[0] if table.rows | length > 0 else none -%}
        {%- do record.update({'row_count': (first[0] | int) if first is not none and first[0] is not none else none}) -%}
    {%- endif -%}
    {%- if wanted.columns -%}
        {%- set columns = [] -%}
        {%- for row in table.rows if row[1] is not none -%}
            {%- do columns.append({'name': row[1] ~ '', 'data_type': row[2] ~ ''}) -%}
        {%- endfor -%}
        {%- do record.update({'columns': columns}) -%}
    {%- endif -%}
    {{ return(record) }}
{% endmacro %}
