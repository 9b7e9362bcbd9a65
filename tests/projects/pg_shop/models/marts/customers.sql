select customer_id, name, segment from {{ ref('stg_customers') }}
