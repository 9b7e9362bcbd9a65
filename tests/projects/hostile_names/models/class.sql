select * from {{ source('app.v2-data', 'events"raw"') }}
