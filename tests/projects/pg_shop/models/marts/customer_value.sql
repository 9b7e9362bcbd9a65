select c.customer_id, c.name, coalesce(t.total_amount, 0) as total_amount
from {{ ref('customers') }} as c
left join {{ ref('order_totals') }} as t using (customer_id)
