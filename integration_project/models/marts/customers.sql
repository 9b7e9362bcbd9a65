with customers as (
    select * from {{ ref('stg_customers') }}
),

customer_orders as (
    select
        customer_id,
        min(order_date) as first_order_date,
        max(order_date) as most_recent_order_date,
        count(*) as number_of_orders,
        sum(case when status != 'returned' then order_amount else 0 end) as lifetime_value
    from {{ ref('orders') }}
    group by customer_id
)

select
    customers.customer_id,
    customers.first_name,
    customers.last_name,
    customers.email,
    customers.country_code,
    customer_orders.first_order_date,
    customer_orders.most_recent_order_date,
    coalesce(customer_orders.number_of_orders, 0) as number_of_orders,
    cast(coalesce(customer_orders.lifetime_value, 0) as decimal(12, 2)) as lifetime_value,
    case
        when coalesce(customer_orders.number_of_orders, 0) = 0 then 'prospect'
        when customer_orders.number_of_orders = 1 then 'new'
        else 'returning'
    end as customer_segment
from customers
left join customer_orders on customers.customer_id = customer_orders.customer_id
