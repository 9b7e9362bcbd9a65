-- Ephemeral: inlined as a CTE into the models that ref it.
select
    order_id,
    count(*) as payment_count,
    sum(amount) as amount_paid,
    max(paid_at) as last_paid_at
from {{ ref('stg_payments') }}
group by order_id
