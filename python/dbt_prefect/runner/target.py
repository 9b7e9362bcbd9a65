"""Where an invocation's task runs go: the flow run, and the task run invoke() runs in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect.context import FlowRunContext, TaskRunContext


@dataclass(frozen=True)
class RunTarget:
    """The Prefect flow run (and task run, when invoked inside a task) dbt runs under."""

    flow_run: Any
    flow_name: str
    parent_task_run: Any = None

    @classmethod
    def current(cls) -> RunTarget | None:
        task_ctx = TaskRunContext.get()
        flow_ctx = FlowRunContext.get()
        if flow_ctx is None or flow_ctx.flow_run is None:
            return None
        flow_name = getattr(flow_ctx.flow, "name", "<unknown>")
        return cls(
            flow_run=flow_ctx.flow_run,
            flow_name=flow_name,
            parent_task_run=task_ctx.task_run if task_ctx is not None else None,
        )
