-- The incremental roll-up must agree with the orders table it summarises.
with expected as (
    select order_date, count(*) as order_count, sum(order_amount) as gross_revenue
    from {{ ref('orders') }}
    group by order_date
)

select expected.*, summary.order_count as summary_order_count, summary.gross_revenue as summary_gross_revenue
from expected
full outer join {{ ref('daily_order_summary') }} as summary
    on expected.order_date = summary.order_date
where summary.order_date is null
    or expected.order_date is null
    or summary.order_count != expected.order_count
    or summary.gross_revenue != expected.gross_revenue
