with orders as (
    select * from {{ ref('stg_orders') }}
),

products as (
    select * from {{ ref('stg_products') }}
),

payments as (
    select * from {{ ref('int_order_payments') }}
)

select
    orders.order_id,
    orders.customer_id,
    orders.product_id,
    orders.order_date,
    orders.status,
    orders.quantity,
    products.unit_price,
    cast(orders.quantity * products.unit_price as decimal(12, 2)) as order_amount,
    coalesce(payments.payment_count, 0) as payment_count,
    cast(coalesce(payments.amount_paid, 0) as decimal(12, 2)) as amount_paid
from orders
left join products on orders.product_id = products.product_id
left join payments on orders.order_id = payments.order_id
