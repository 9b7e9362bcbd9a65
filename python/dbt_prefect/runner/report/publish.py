"""Publishing the run report as Prefect artifacts, with links to the Prefect UI."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate

from dbt_prefect.runner.failures import result_statuses
from dbt_prefect.runner.report.links import ui_pages
from dbt_prefect.runner.report.markdown import description, render_markdown, table_rows
from dbt_prefect.runner.report.model import NO_REPORT_COMMANDS, RunReport, build_report, project_name

_logger = logging.getLogger("dbt_prefect")


def _first_node_start(finished: Mapping[str, Any]) -> dt.datetime | None:
    """When the first node started (dbt's node_started_at, naive UTC), before any asset event."""
    starts = []
    for done in finished.values():
        text = getattr(done.node_info, "node_started_at", "") or ""
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            continue
        starts.append(moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC))
    return min(starts, default=None)


def _asset_events_window(finished: Mapping[str, Any]) -> tuple[dt.datetime, dt.datetime] | None:
    """Whole minutes from the first node's start to just after now: every asset event of
    the invocation is emitted in between, so the link keeps working after the past day."""
    start = _first_node_start(finished)
    if start is None:
        return None
    now = dt.datetime.now(dt.UTC)
    return start.replace(second=0, microsecond=0), now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)


# -- publishing ----------------------------------------------------------------------
def publish(report: RunReport, flow_run_id: Any, task_run_id: Any = None, client: Any = None) -> list[Any]:
    """Create the markdown and table artifacts on the flow (and task) run; return their ids
    (the markdown's is kept as ``report.artifact_id``)."""
    artifacts = [
        ArtifactCreate(
            key=report.key,
            type="markdown",
            description=description(report),
            data=render_markdown(report),
            flow_run_id=flow_run_id,
            task_run_id=task_run_id,
        ),
        ArtifactCreate(
            key=report.table_key,
            type="table",
            description=f"Every node of {description(report)}",
            data=json.dumps(table_rows(report)),
            flow_run_id=flow_run_id,
            task_run_id=task_run_id,
        ),
    ]
    if client is not None:
        ids = [client.create_artifact(artifact=a).id for a in artifacts]
    else:
        with get_client(sync_client=True) as sync_client:
            ids = [sync_client.create_artifact(artifact=a).id for a in artifacts]
    report.artifact_id = ids[0]
    return ids


def publish_run_report(
    recorder: Any,
    *,
    command: str,
    args: Iterable[str],
    project_dir: Path,
    with_asset_keys: bool,
    scrub: Callable[[str], str] = lambda text: text,
    client: Any = None,
    dbt_result: Any = None,
    publish_to_api: bool = True,
) -> RunReport | None:
    """The runner's single entry point: build the report of one invocation and publish it
    (``publish_to_api=False``: build it only, when the API is not answering).

    Never raises: a report that cannot be written is logged, and dbt's result stands.
    """
    target = recorder.target
    if target is None or command in NO_REPORT_COMMANDS:
        return None
    try:
        catalog = recorder.catalog
        report = build_report(
            recorder.finished,
            project=project_name(project_dir, catalog.manifest),
            command=command,
            args=list(args),
            with_asset_keys=with_asset_keys,
            scrub=scrub,
            error=getattr(dbt_result, "exception", None),
            dbt_statuses=result_statuses(dbt_result),
            catalog=catalog,
        )
        report.flow_run_id = target.flow_run.id
        if not publish_to_api:
            _logger.warning("dbt-prefect did not publish the run report artifact: the Prefect API is not answering")
            return report
        # Links open the UI this server's users get by default (V2's pages, unless turned off).
        report.ui = ui_pages()
        if report.ui is not None and report.assets:
            report.asset_events_window = _asset_events_window(recorder.finished)
            since, until = report.asset_events_window or (None, None)
            report.asset_events_url = report.ui.event_feed(report.flow_run_id, since, until)
        parent = target.parent_task_run
        publish(report, target.flow_run.id, parent.id if parent is not None else None, client=client)
        return report
    except Exception as exc:
        _logger.warning("dbt-prefect could not create the run report artifact: %s", exc)
        return None
