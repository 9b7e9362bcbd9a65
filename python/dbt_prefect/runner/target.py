"""Where an invocation's task runs go: the flow run, and the task run invoke() runs in."""

from __future__ import annotations

import logging
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


def run_logger(target: RunTarget | None) -> tuple[logging.Logger, dict[str, Any]]:
    """The logger and ``extra`` for a run's lines that belong to no node: the flow run's,
    the task run's when invoke() runs inside a task, or plain ``prefect.dbt`` outside a flow."""
    if target is None:
        return logging.getLogger("prefect.dbt"), {}
    flow_run = target.flow_run
    extra = {
        "flow_run_id": str(flow_run.id),
        "flow_run_name": flow_run.name,
        "flow_name": target.flow_name,
    }
    if target.parent_task_run is not None:
        extra["task_run_id"] = str(target.parent_task_run.id)
        extra["task_run_name"] = target.parent_task_run.name
        extra["task_name"] = target.parent_task_run.name
        return logging.getLogger("prefect.task_runs"), extra
    return logging.getLogger("prefect.flow_runs"), extra


def current_run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The flow (or task) run's logger, so that a line shows on the run's page in Prefect;
    outside a run, dbt-prefect's own logger."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("dbt_prefect")
