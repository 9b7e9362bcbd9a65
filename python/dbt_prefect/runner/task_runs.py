"""A dbt node's Prefect task run: how it is built, and how each state change is sent.

The recorder decides when a node starts and ends; this module writes that down the way
Prefect's own task engine does in Prefect 3: a TaskRun object kept in the client, and one
task-run state-change event per state, from which the server builds the task run.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

from prefect.client.schemas.objects import TaskRun, TaskRunPolicy, TaskRunResult
from prefect.states import State

from dbt_prefect._compat.prefect import emit_task_run_state_change_event, prefect_datetime, utc_datetime
from dbt_prefect.model.nodes import DbtNode
from dbt_prefect.runner.target import RunTarget


class NodeRun:
    """One node's task run while it is being recorded, and the last event sent for it."""

    __slots__ = ("node", "task_run", "last_event", "log_extra", "started")

    def __init__(self, node: DbtNode, task_run: TaskRun, log_extra: dict[str, Any], started: float) -> None:
        self.node = node
        self.task_run = task_run
        self.last_event: Any = None
        self.log_extra = log_extra
        self.started = started  # dbt's NodeStart timestamp


def new_task_run(
    target: RunTarget, node: DbtNode, timestamp: float, upstream_ids: Iterable[uuid.UUID | None]
) -> TaskRun:
    """The node's task run in the target's flow run, waiting for the task runs of its
    recorded parents (``None``: a parent with no task run)."""
    task_run_id = uuid.uuid4()
    created = utc_datetime(timestamp)
    inputs: dict[str, list[Any]] = {}
    upstream = [TaskRunResult(id=parent_id) for parent_id in upstream_ids if parent_id is not None]
    if upstream:
        inputs["wait_for"] = upstream
    if target.parent_task_run is not None:
        inputs["__parents__"] = [TaskRunResult(id=target.parent_task_run.id)]
    return TaskRun(
        id=task_run_id,
        name=node.task_run_name,
        flow_run_id=target.flow_run.id,
        task_key=f"dbt-{node.unique_id}"[:2000],
        dynamic_key=str(task_run_id),
        empirical_policy=TaskRunPolicy(),
        tags=list(getattr(target.flow_run, "tags", None) or []),
        task_inputs=inputs,
        flow_run_run_count=getattr(target.flow_run, "run_count", 0) or 0,
        expected_start_time=created,
        created=created,
        updated=created,
    )


def advance(run: NodeRun, state: State, *, first_event: bool) -> None:
    """Move the task run to ``state`` and send the state-change event.

    ``first_event``: no state was sent since the node started, so this event, if not
    Running, carries the whole run: start time, run count and run time included."""
    task_run = run.task_run
    if first_event and not state.is_running():
        started = utc_datetime(run.started)
        task_run.run_count = 1
        task_run.start_time = started
        task_run.total_run_time = max(state.timestamp - started, dt.timedelta(0))
    last = task_run.state
    if last is not None and state.timestamp <= last.timestamp:
        # The server orders a run's states by timestamp; keep them strictly increasing.
        state.timestamp = last.timestamp + dt.timedelta(microseconds=1)
    state.state_details.task_run_id = task_run.id
    state.state_details.flow_run_id = task_run.flow_run_id
    task_run.state = state
    task_run.state_id = state.id
    task_run.state_type = state.type
    task_run.state_name = state.name
    if last is not None and last.is_running():
        task_run.total_run_time += state.timestamp - last.timestamp
    if state.is_running():
        task_run.run_count += 1
        task_run.start_time = prefect_datetime(state.timestamp)
    if state.is_final():
        task_run.end_time = prefect_datetime(state.timestamp)
    run.last_event = emit_task_run_state_change_event(
        task_run=task_run, initial_state=last, validated_state=state, follows=run.last_event
    )
