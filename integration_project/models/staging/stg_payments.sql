select
    id as payment_id,
    order_id,
    payment_method,
    cast(amount_cents / 100.0 as decimal(10, 2)) as amount,
    created_at as paid_at,
    _loaded_at as loaded_at
from {{ source('payments_app', 'payments') }}
