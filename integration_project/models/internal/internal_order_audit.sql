-- Orders whose payments do not match the order amount (for the ops team only).
select
    order_id,
    status,
    order_amount,
    amount_paid,
    amount_paid - order_amount as difference
from {{ ref('orders') }}
where amount_paid != order_amount
