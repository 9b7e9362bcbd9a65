"""Running PrefectDbtOrchestrator in a test: a fresh flow run on a given task runner."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional


def worker_pids(cluster: Any) -> set[int]:
    from distributed import Client

    with Client(cluster) as client:
        return set(client.run(os.getpid).values())


@dataclass
class Orchestrated:
    flow_run_id: Any
    state: Any
    result: Any = None
    error: Optional[BaseException] = None
    orchestrator: Any = None


def orchestrate(
    project: Path,
    task_runner: Any,
    build: Optional[dict[str, Any]] = None,
    register: Optional[Callable[[Any], None]] = None,
    **options: Any,
) -> Orchestrated:
    """Run PrefectDbtOrchestrator(**options).run_build(**build) in a fresh flow run on `task_runner`;
    `register(orchestrator)` may add lifecycle hooks first."""
    from prefect import flow
    from prefect.context import FlowRunContext

    from dbt_prefect import PrefectDbtSettings
    from dbt_prefect import PrefectDbtOrchestrator

    captured: dict[str, Any] = {}
    # These tests were written for per-node execution, with immediate retries.
    options.setdefault("execution_mode", "per_node")
    options.setdefault("retry_delay_seconds", 0)

    @flow(name="dbt-orchestrator-test", task_runner=task_runner)
    def orchestrated_flow() -> None:
        captured["flow_run_id"] = FlowRunContext.get().flow_run.id
        orchestrator = PrefectDbtOrchestrator(
            settings=PrefectDbtSettings(project_dir=project, profiles_dir=project), **options
        )
        captured["orchestrator"] = orchestrator
        if register is not None:
            register(orchestrator)
        try:
            captured["result"] = orchestrator.run_build(**(build or {}))
        except BaseException as exc:
            captured["error"] = exc
            raise

    state = orchestrated_flow(return_state=True)
    return Orchestrated(
        flow_run_id=captured["flow_run_id"],
        state=state,
        result=captured.get("result"),
        error=captured.get("error"),
        orchestrator=captured.get("orchestrator"),
    )


def dask_runner(cluster: Any) -> Any:
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=cluster.scheduler_address)
