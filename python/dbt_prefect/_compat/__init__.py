"""The only modules that touch private Prefect and dbt APIs, each with its reason.

- ``prefect``: task-run state events, flushing Prefect's background workers, asset key rules.
- ``dbt``: dbt-core internals for the invocation environment and the orchestrator's warm
  per-node sessions.
- ``dbt_plugin``: dbt's experimental plugin hook that hands over the parsed manifest.
- ``prefect_timeouts``: Prefect's injected timeout exception, redirected into dbt's cancel
  path for the thread running ``invoke`` (``runner/cancellation.py``).
- ``dbt_state``: dbt's artifact readers, to check a stored state before ``--state`` uses
  it and then hand dbt what the check loaded, and which sources have a freshness config
  (``only_changed``).
- ``prefect_server``: the app of Prefect's temporary server, which ``dbt-prefect`` commands
  start themselves when no ``PREFECT_API_URL`` is set (``cli/server.py``).
"""
