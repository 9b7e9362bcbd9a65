select
    customer_id,
    sum(amount) as total_amount,
    count(*) as order_count
    {% if var('broken') %}, 1 / 0 as broken_on_purpose{% endif %}
from {{ ref('int_paid_orders') }}
group by customer_id
