select
    id as product_id,
    sku,
    name as product_name,
    category,
    cast(price_cents / 100.0 as decimal(10, 2)) as unit_price
from {{ ref('raw_products') }}
