select * from {{ ref('subgraph') }}
