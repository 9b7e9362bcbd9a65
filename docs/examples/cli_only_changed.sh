# The first build saves its state; the next builds only what changed since.
dbt-prefect build --only-changed --state-store .dbt-state
dbt-prefect build --only-changed --state-store .dbt-state
