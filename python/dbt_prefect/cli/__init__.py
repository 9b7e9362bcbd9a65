"""The ``dbt-prefect`` command: dbt's commands in a Prefect flow, with live progress."""

from dbt_prefect.cli.main import app, main

__all__ = ["app", "main"]
