{#- With var flaky: the first attempt in a schema divides by zero, later ones pass.
    The sequence is created outside the model's transaction, so it survives the failure. -#}
{{ config(pre_hook=before_begin("create sequence if not exists " ~ target.schema ~ ".flaky_attempts")) }}
select
    count(*) as customer_count
    {% if var('flaky') %}, 1 / ((nextval('{{ target.schema }}.flaky_attempts') + 1) % 2) as attempt_ok{% endif %}
from {{ ref('stg_customers') }}
