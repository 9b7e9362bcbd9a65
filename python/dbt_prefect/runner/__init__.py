"""PrefectDbtRunner: one dbtRunner invocation, mirrored in Prefect while it runs.

``args`` reads the command; ``events`` is the cheap dbt callback; ``recorder`` turns dbt
events into task-run states and logs; ``asset_events`` emits asset events; ``report`` and
``failures`` summarise the invocation; ``readback`` waits until the server shows the
task runs; ``parse_ahead`` keeps asset keys under ``--no-write-json``; ``cancellation``
turns a timeout, cancellation or SIGTERM into dbt's own cancel path; ``changed`` and
``state_store`` are ``only_changed``'s selection and the store of the last build's
artifacts. Delivery to the API is the ``delivery`` package's.
"""

from dbt_prefect.runner.runner import PrefectDbtRunner

__all__ = ["PrefectDbtRunner"]
