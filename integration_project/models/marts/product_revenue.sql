select
    products.product_id,
    products.product_name,
    products.category,
    coalesce(sum(orders.quantity), 0) as units_sold,
    cast(coalesce(sum(orders.order_amount), 0) as decimal(12, 2)) as revenue
from {{ ref('stg_products') }} as products
left join {{ ref('orders') }} as orders
    on products.product_id = orders.product_id
    and orders.status != 'returned'
group by 1, 2, 3
