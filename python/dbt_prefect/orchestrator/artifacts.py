"""What an orchestrated build leaves behind: the runner's run report (per-node builds;
a per-wave build publishes its own from its recorder) and, when asked, a
run_results.json in dbt's own schema, which ``dbt retry`` reads."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from types import SimpleNamespace

from dbt_prefect.model.nodes import FinishedNode
from dbt_prefect.orchestrator.preparation import PreparedBuild
from dbt_prefect.orchestrator.results import BuildResult, NodeResult
from dbt_prefect.orchestrator.run_results import NodeRunRecord, record_from_dbt_result, write_run_results
from dbt_prefect.runner.report.publish import publish_run_report
from dbt_prefect.runner.target import RunTarget

_logger = logging.getLogger("dbt_prefect")


def publish_node_build_report(
    prepared: PreparedBuild, results: list[NodeResult], hooks: list[NodeResult], with_asset_keys: bool
) -> None:
    """The runner's run report for a per-node build, from the node tasks' outcomes."""
    target = RunTarget.current()
    if target is None:
        return
    finished = {
        r.unique_id: FinishedNode(
            node=r.node,
            status=r.status,
            message=r.message,
            task_run_id=r.task_run_id,
            node_info=None,
            run_result=SimpleNamespace(execution_time=r.execution_time, adapter_response={}),
        )
        for r in results
    }
    # The report reads what a recorder holds and what dbt's result says, hooks included.
    recorder = SimpleNamespace(target=target, catalog=prepared.catalog, finished=finished)
    statuses = [SimpleNamespace(status=r.status) for r in (*results, *hooks)]
    publish_run_report(
        recorder,
        command="build",
        args=prepared.request.build_args,
        project_dir=prepared.request.project_dir,
        with_asset_keys=with_asset_keys,
        dbt_result=SimpleNamespace(result=SimpleNamespace(results=statuses), exception=None),
    )


def write_build_run_results(prepared: PreparedBuild, target_path: Path, outcome: BuildResult, elapsed: float) -> Path:
    """run_results.json for the whole build in the target path: dbt's own result where a
    dbt invocation in this process ran the node, else one built from the node's outcome."""
    request = prepared.request
    target_dir = target_path if target_path.is_absolute() else request.project_dir / target_path
    records = [
        record_from_dbt_result(r.run_result)
        if r.run_result is not None
        else NodeRunRecord(
            unique_id=r.unique_id,
            status=r.status,
            message=r.message or None,
            started_at=_utc(r.ran_from or r.started),
            completed_at=_utc(r.ran_to or r.finished),
            execution_time=r.execution_time,
        )
        for r in outcome.results
    ]
    path = write_run_results(target_dir, records, elapsed_seconds=elapsed, invocation_args=request.invocation_args())
    _logger.info("run_results.json written to %s", path)
    return path


def _utc(timestamp: float) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC) if timestamp else None
