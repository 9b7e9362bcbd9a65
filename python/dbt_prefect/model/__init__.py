"""What dbt-prefect knows about a dbt project, independent of how it runs."""
