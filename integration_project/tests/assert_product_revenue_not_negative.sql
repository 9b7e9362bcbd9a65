-- Revenue and units can never be negative; returns offending products.
select *
from {{ ref('product_revenue') }}
where revenue < 0 or units_sold < 0
