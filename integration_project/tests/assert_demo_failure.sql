{{ config(enabled=var('fail_demo_test', false)) }}

-- Deliberately failing test for demos of failure handling. Disabled unless
-- the var is set: dbt build --vars '{fail_demo_test: true}'
-- It returns every product row, so it always fails. product_revenue is a leaf
-- model, so the failure skips no other node.
select *
from {{ ref('product_revenue') }}
