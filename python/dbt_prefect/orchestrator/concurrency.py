"""The orchestrator's ``concurrency``: a Prefect global concurrency limit on node tasks.

An integer becomes a limit created for the build and deleted after it; a string names a
limit the user manages. Either way each node task holds one slot while dbt runs it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

from dbt_prefect.errors import OrchestratorUsageError

_logger = logging.getLogger("dbt_prefect")


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


@contextmanager
def concurrency_limit(concurrency: int | str | None, flow_run_id: Any) -> Iterator[str | None]:
    """The name of the limit the node tasks take slots of, for the duration of the build."""
    if concurrency is None or isinstance(concurrency, str):
        yield concurrency
        return
    name = f"dbt-prefect-orchestrator-{flow_run_id}-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=name, limit=int(concurrency), active=True)
        )
    try:
        yield name
    finally:
        with get_client(sync_client=True) as client:
            try:
                client.delete_global_concurrency_limit_by_name(name)
            except Exception as exc:
                _logger.warning("could not delete the concurrency limit %s: %s", name, exc)
