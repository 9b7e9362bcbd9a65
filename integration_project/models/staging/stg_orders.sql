select
    id as order_id,
    customer_id,
    product_id,
    quantity,
    ordered_at as order_date,
    lower(trim(status)) as status
from {{ ref('raw_orders') }}
