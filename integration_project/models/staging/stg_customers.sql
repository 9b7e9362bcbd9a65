select
    id as customer_id,
    first_name,
    last_name,
    lower(email) as email,
    upper(country) as country_code,
    signed_up_at as signup_date
from {{ ref('raw_customers') }}
