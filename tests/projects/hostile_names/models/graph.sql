select * from {{ ref('end') }}
