select * from {{ ref('seed-with-dash') }}
