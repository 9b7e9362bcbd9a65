"""Read what a run left on the Prefect server, through the real client."""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, TypeVar
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
    TaskRunFilter,
    TaskRunFilterId,
)
from prefect.client.schemas.sorting import LogSort

T = TypeVar("T")


def task_runs(flow_run_id: UUID) -> list[Any]:
    runs: list[Any] = []
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                offset=len(runs),
                limit=200,
            )
            runs.extend(page)
            if len(page) < 200:
                return runs


def task_runs_by_id(ids: list[UUID]) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_task_runs(task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=ids)))


def flow_run(flow_run_id: UUID) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def logs(flow_run_id: UUID) -> list[Any]:
    found: list[Any] = []
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                offset=len(found),
                limit=200,
                sort=LogSort.TIMESTAMP_ASC,
            )
            found.extend(page)
            if len(page) < 200:
                return found


def poll(fetch: Callable[[], T], done: Callable[[T], bool], timeout: float = 30.0) -> T:
    """Fetch until done(result) holds, for at most `timeout` seconds; return the last result."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        result = fetch()
        if done(result) or time.monotonic() >= deadline:
            return result
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def by_name(runs: list[Any]) -> dict[str, Any]:
    named: dict[str, Any] = {}
    for run in runs:
        assert run.name not in named, f"two task runs named {run.name!r}"
        named[run.name] = run
    return named


def state_of(run: Any) -> tuple[str, str]:
    return (run.state_type.value, run.state_name)


def message_of(run: Any) -> Optional[str]:
    return run.state.message if run.state is not None else None


def events_of_flow_run(flow_run_id: UUID, prefix: str, settle: float = 1.2, timeout: float = 20.0) -> list[Any]:
    """Every event whose name starts with `prefix` and that is related to a flow run, oldest first.

    invoke() returns once its events are delivered; the server stores them in batches
    (every 0.5 s on the test server). So read until the events are there and no new one
    came for `settle` seconds, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    found = _read_events_of_flow_run(flow_run_id, prefix)
    settled_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.3)
        again = _read_events_of_flow_run(flow_run_id, prefix)
        if len(again) != len(found):
            found, settled_since = again, time.monotonic()
        elif time.monotonic() - settled_since >= settle:
            break
    return found


def _read_events_of_flow_run(flow_run_id: UUID, prefix: str) -> list[Any]:
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    event_filter = EventFilter(
        event=EventNameFilter(prefix=[prefix]),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
    )
    with get_client(sync_client=True) as client:
        page = client.read_events(filter=event_filter, limit=50)
        found = list(page.events)
        while page.next_page:
            page = client.read_events_page(page.next_page)
            found.extend(page.events)
    return sorted(found, key=lambda event: event.occurred)


def asset_events(flow_run_id: UUID) -> list[Any]:
    """Every prefect.asset.* event related to a flow run, oldest first."""
    return events_of_flow_run(flow_run_id, "prefect.asset.")


def materializations(events: list[Any], outcome: str = "succeeded") -> dict[str, Any]:
    """Materialization events by asset key; fails if an asset was materialized twice."""
    found: dict[str, Any] = {}
    for event in events:
        if event.event == f"prefect.asset.materialization.{outcome}":
            key = event.resource.id
            assert key not in found, f"{key} materialized twice"
            found[key] = event
    return found


def related_assets(event: Any) -> set[str]:
    return {r.id for r in event.related if r.role == "asset"}
