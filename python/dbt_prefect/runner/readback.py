"""The one wait for the Prefect server, shared by the runner and the orchestrator.

``invoke`` and ``run_build`` promise that what they recorded can be read back when they
return: every task run in its terminal state, every asset event stored. This module
flushes Prefect's background workers (for what did not go through an outbox), then asks
the server, with a bounded wait. It never raises: a server that is down or failing gets
one warning, and the caller's result stands.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dbt_prefect._compat.prefect import flush_events_and_logs
from dbt_prefect.delivery.api import ApiRejected, ApiUnavailable, PrefectApi

_logger = logging.getLogger("dbt_prefect")

# Ids per request (the server caps a read at 200): task runs are counted, and read only
# when some lag; events are only counted.
_TASK_RUN_BATCH = 200
_EVENT_BATCH = 500
_FINAL_STATE_TYPES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


@dataclass(frozen=True)
class Readback:
    """What the server did not show within the wait."""

    missing_task_runs: tuple[uuid.UUID, ...] = ()
    missing_events: int = 0
    error: str | None = None


def wait_until_recorded(
    task_run_ids: Sequence[uuid.UUID], event_ids: Sequence[uuid.UUID], timeout: float, flush: bool = True
) -> Readback:
    """Wait, at most ``timeout`` seconds in all, until the server shows every task run as
    terminal and holds every event; log one warning for what it still does not."""
    if not task_run_ids and not event_ids:
        return Readback()
    deadline = time.monotonic() + timeout
    pending_runs = set(task_run_ids)
    pending_events = list(event_ids)
    error: str | None = None
    try:
        api = PrefectApi()
    except Exception as exc:
        return _warn(Readback(tuple(sorted(pending_runs)), len(pending_events), str(exc)), task_run_ids, event_ids)
    try:
        if flush:
            flush_events_and_logs(min(timeout, 30.0))
        delay = 0.05
        while True:
            try:
                for batch in _batches(sorted(pending_runs), _TASK_RUN_BATCH):
                    # Counting is cheap for the server; which runs lag is read only when some do.
                    if _count_terminal(api, batch) == len(batch):
                        pending_runs.difference_update(batch)
                    else:
                        pending_runs.difference_update(_terminal_task_runs(api, batch))
                still_missing: list[uuid.UUID] = []
                for chunk in _batches(pending_events, _EVENT_BATCH):
                    if _stored_events(api, chunk) < len(chunk):
                        still_missing.extend(chunk)
                pending_events = still_missing
                error = None
            except (ApiUnavailable, ApiRejected) as exc:
                error = str(exc)
            if (not pending_runs and not pending_events) or time.monotonic() >= deadline:
                break
            time.sleep(min(delay, max(deadline - time.monotonic(), 0.0)))
            delay = min(delay * 2, 0.5)
    except Exception as exc:  # the readback must never replace the run's own result
        error = f"{type(exc).__name__}: {exc}"
    finally:
        api.close()
    return _warn(Readback(tuple(sorted(pending_runs)), len(pending_events), error), task_run_ids, event_ids)


def _count_terminal(api: PrefectApi, ids: list[uuid.UUID]) -> int:
    body = {
        "task_runs": {"id": {"any_": [str(i) for i in ids]}, "state": {"type": {"any_": sorted(_FINAL_STATE_TYPES)}}}
    }
    return int(api.post("/task_runs/count", json.dumps(body).encode()).json())


def _terminal_task_runs(api: PrefectApi, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    body = {"task_runs": {"id": {"any_": [str(i) for i in ids]}}, "limit": len(ids)}
    runs = api.post("/task_runs/filter", json.dumps(body).encode()).json()
    return {uuid.UUID(run["id"]) for run in runs if (run.get("state") or {}).get("type") in _FINAL_STATE_TYPES}


def _stored_events(api: PrefectApi, ids: list[uuid.UUID]) -> int:
    # The server's default window is the last day; these events are minutes old.
    body = {"filter": {"id": {"id": [str(i) for i in ids]}}, "limit": 1}
    return int(api.post("/events/filter", json.dumps(body).encode()).json()["total"])


def _warn(readback: Readback, task_run_ids: Sequence[uuid.UUID], event_ids: Sequence[uuid.UUID]) -> Readback:
    if readback.missing_task_runs or readback.missing_events:
        cause = f" ({readback.error})" if readback.error else ""
        _logger.warning(
            "the Prefect server did not show %d of %d dbt task runs as finished and %d of %d asset events%s",
            len(readback.missing_task_runs),
            len(task_run_ids),
            readback.missing_events,
            len(event_ids),
            cause,
        )
    return readback


def _batches(items: Sequence[uuid.UUID], size: int) -> Iterable[list[uuid.UUID]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
