"""The orchestrator's ``concurrency`` (PER_NODE).

- A count N: at most N node tasks unfinished at once. The flow caps them itself
  (per_node.PerNodeBuild._submit_capped), or ``task_runner_type(max_workers=N)`` does.
  No Prefect concurrency limit is made for it: a slot costs each node three API calls, two
  events and a wait until the server sees it free again.
- A name: a Prefect global concurrency limit the user manages, which other flows may
  share. Each node task holds one of its slots while dbt runs it (worker.py).
"""

from __future__ import annotations

from prefect.client.orchestration import get_client

from dbt_prefect.errors import OrchestratorUsageError


def check_concurrency_limit(concurrency: int | str | None) -> None:
    """A named limit must exist before anything runs."""
    if not isinstance(concurrency, str):
        return
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(concurrency)
        except Exception as exc:
            raise OrchestratorUsageError(
                f"no Prefect global concurrency limit named {concurrency!r} "
                f"(create it with `prefect gcl create {concurrency} --limit N`, or pass an integer)"
            ) from exc
