{{
    config(
        materialized='incremental',
        unique_key='order_date',
        on_schema_change='fail'
    )
}}

-- On incremental runs, re-process the last 3 days already loaded (late
-- payments can still change them) plus anything newer; unique_key replaces them.
select
    order_date,
    count(*) as order_count,
    sum(quantity) as units,
    cast(sum(order_amount) as decimal(12, 2)) as gross_revenue,
    cast(sum(amount_paid) as decimal(12, 2)) as amount_paid,
    current_timestamp as summarised_at
from {{ ref('orders') }}
{% if is_incremental() %}
where order_date >= (select max(order_date) - interval 3 day from {{ this }})
{% endif %}
group by order_date
