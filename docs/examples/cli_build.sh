# In your dbt project's folder, with dbt-prefect installed in the environment.
dbt deps
dbt-prefect build --flow-run-name "first-build"
dbt-prefect build --select orders+ --flow-run-name "orders-and-below"
