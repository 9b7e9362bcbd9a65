"""The one wait for the Prefect server, shared by the runner and the orchestrator.

``invoke`` and ``run_build`` promise that what they recorded can be read back when they
return: every task run in its terminal state, every asset event stored. This module
flushes Prefect's background workers, then asks the server, with a bounded wait.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterId
from prefect.events.filters import EventFilter, EventIDFilter

from dbt_prefect._compat.prefect import flush_events_and_logs

_logger = logging.getLogger("dbt_prefect")

# Ids per request: the task-run filter reads whole runs; the event filter only counts.
_TASK_RUN_BATCH = 200
_EVENT_BATCH = 500


@dataclass(frozen=True)
class Readback:
    """What the server did not show within the wait."""

    missing_task_runs: tuple[uuid.UUID, ...] = ()
    missing_events: int = 0


def wait_until_recorded(task_run_ids: Sequence[uuid.UUID], event_ids: Sequence[uuid.UUID], timeout: float) -> Readback:
    """Wait, at most ``timeout`` seconds in all, until the server shows every task run as
    terminal and holds every event; log one warning for what it still does not."""
    if not task_run_ids and not event_ids:
        return Readback()
    deadline = time.monotonic() + timeout
    flush_events_and_logs(timeout)
    with get_client(sync_client=True) as client:
        pending_runs = set(task_run_ids)
        pending_events = list(event_ids)
        delay = 0.05
        while True:
            for batch in _batches(sorted(pending_runs), _TASK_RUN_BATCH):
                runs = client.read_task_runs(
                    task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=batch)), limit=len(batch)
                )
                pending_runs.difference_update(run.id for run in runs if run.state is not None and run.state.is_final())
            still_missing: list[uuid.UUID] = []
            for chunk in _batches(pending_events, _EVENT_BATCH):
                page = client.read_events(filter=EventFilter(id=EventIDFilter(id=chunk)), limit=1)
                if page.total < len(chunk):
                    still_missing.extend(chunk)
            pending_events = still_missing
            if (not pending_runs and not pending_events) or time.monotonic() >= deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
    readback = Readback(tuple(sorted(pending_runs)), len(pending_events))
    if readback.missing_task_runs or readback.missing_events:
        _logger.warning(
            "after %.0f s the Prefect server did not yet show %d of %d dbt task runs and %d of %d asset events",
            timeout,
            len(readback.missing_task_runs),
            len(task_run_ids),
            readback.missing_events,
            len(event_ids),
        )
    return readback


def _batches(items: Sequence[uuid.UUID], size: int) -> Iterable[list[uuid.UUID]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
