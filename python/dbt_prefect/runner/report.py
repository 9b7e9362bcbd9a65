"""The run report: what one dbt invocation did, as Prefect artifacts and as a terminal summary.

Every ``invoke`` inside a flow or task publishes two artifacts, under keys that stay the
same from run to run so that Prefect keeps their history side by side:

- ``dbt-<project>-<command>`` (markdown): counts by status, failures and warnings with
  their messages, the assets the run materialized with their upstream keys, outcome and
  row count (and a link to their events in Prefect's event feed), the 10 slowest nodes,
  and a table of every node with its resource type, status, duration, rows affected and
  asset key;
- ``dbt-<project>-<command>-nodes`` (table): one row per node, for sorting and comparing.

``<project>`` and ``<command>`` are slugified: lowercase, every run of other characters a
dash. ``dbt build`` of project ``shop`` gives ``dbt-shop-build``; ``dbt source
freshness`` of ``jaffle_shop`` gives ``dbt-jaffle-shop-source-freshness``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml
from google.protobuf.json_format import MessageToDict
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.settings import get_current_settings

from dbt_prefect.model.assets import upstream_asset_nodes
from dbt_prefect.model.statuses import Outcome, classify, summary_counts, summary_line
from dbt_prefect.runner.failures import result_statuses

_logger = logging.getLogger("dbt_prefect")

# Commands that run no dbt node: they get no report.
NO_REPORT_COMMANDS = frozenset({"deps", "clean", "debug", "init", "parse", "list", "ls", "run-operation", "docs serve"})

SLOWEST = 10
# The markdown lists at most this many nodes, and as many assets; the table artifact
# always has all of them.
MAX_MARKDOWN_NODES = 500
_MAX_CELL = 300

# What happened to a node's asset, by the node's outcome, as its events tell it: a
# skipped or no-op node built nothing (no event), a failed one got materialization.failed.
ASSET_OUTCOMES = {
    Outcome.SUCCEEDED: "materialized",
    Outcome.WARNED: "materialized",
    Outcome.FAILED: "failed",
    Outcome.SKIPPED: "not built (skipped)",
    Outcome.NO_OP: "not built (no-op)",
}
# The event names Prefect gives asset materializations and references.
ASSET_EVENTS = "prefect.asset.*"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def artifact_key(project: str, command: str) -> str:
    """``dbt-<project>-<command>``, a valid Prefect artifact key (lowercase letters, digits, dashes)."""
    return "-".join(part for part in ("dbt", slug(project), slug(command)) if part)


def project_name(project_dir: Path, manifest: Any = None) -> str:
    """The dbt project's name: from the parsed manifest, else from dbt_project.yml, else the directory."""
    name = getattr(getattr(manifest, "metadata", None), "project_name", None)
    if name:
        return str(name)
    try:
        with open(Path(project_dir) / "dbt_project.yml", encoding="utf-8") as f:
            data = yaml.safe_load(f)
        if isinstance(data, dict) and data.get("name"):
            return str(data["name"])
    except Exception:
        pass
    return Path(project_dir).resolve().name or "project"


@dataclass(frozen=True)
class NodeReport:
    unique_id: str
    name: str
    resource_type: str
    status: str
    message: str = ""
    duration: float | None = None  # seconds; None for nodes dbt skipped
    rows_affected: int | None = None
    asset_key: str | None = None
    path: str | None = None
    task_run_id: Any = None
    task_run_name: str = ""

    @property
    def outcome(self) -> Outcome:
        return classify(self.status).outcome


@dataclass(frozen=True)
class AssetReport:
    """One asset of the run: its key, its upstream asset keys, what happened to it."""

    key: str
    upstream: tuple[str, ...] = ()
    outcome: str = ASSET_OUTCOMES[Outcome.SUCCEEDED]
    row_count: int | None = None  # read from the warehouse by collect_metadata, when it ran


@dataclass
class RunReport:
    project: str
    command: str
    args: tuple[str, ...] = ()
    nodes: list[NodeReport] = field(default_factory=list)
    error: str = ""  # what dbt raised, when it stopped with an error rather than node failures
    # Every status in dbt's own result, run hooks included: what dbt's Done. line counts.
    # Empty when dbt returned no result; the nodes are counted then.
    dbt_statuses: tuple[str, ...] = ()
    # The seeds, models and snapshots dbt ran, when assets are on; sorted by key.
    assets: list[AssetReport] = field(default_factory=list)
    flow_run_id: Any = None
    # The Prefect UI's event feed, filtered to this flow run's asset events, when the UI's
    # address is known. Prefect's open-source server has no assets page; this one exists.
    asset_events_url: str | None = None

    @property
    def key(self) -> str:
        return artifact_key(self.project, self.command)

    @property
    def table_key(self) -> str:
        return f"{self.key}-nodes"

    @property
    def counts(self) -> dict[str, int]:
        """dbt's closing-line counts (PASS, WARN, ERROR, SKIP, NO-OP, TOTAL)."""
        return summary_counts(self.dbt_statuses or [node.status for node in self.nodes])

    @property
    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.status] = counts.get(node.status, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    @property
    def failures(self) -> list[NodeReport]:
        return [node for node in self.nodes if node.outcome is Outcome.FAILED]

    @property
    def warnings(self) -> list[NodeReport]:
        return [node for node in self.nodes if node.outcome is Outcome.WARNED]

    def slowest(self, n: int = SLOWEST) -> list[NodeReport]:
        timed = [(node.duration, node) for node in self.nodes if node.duration is not None]
        return [node for _, node in sorted(timed, key=lambda item: (-item[0], item[1].task_run_name))][:n]

    @property
    def stats_line(self) -> str:
        """dbt's closing line after ``Done.``: ``PASS=35 WARN=0 ERROR=1 SKIP=0 NO-OP=0 TOTAL=36``."""
        return summary_line(self.counts)

    @property
    def command_line(self) -> str:
        return shlex.join(["dbt", *self.args]) if self.args else f"dbt {self.command}"


# -- building ------------------------------------------------------------------------
_TYPE_ORDER = {"seed": 0, "source": 1, "snapshot": 2, "model": 3, "test": 4, "unit_test": 5}


def _rows_affected(run_result: Any) -> int | None:
    response = getattr(run_result, "adapter_response", None)
    if not response:
        return None
    try:
        rows = MessageToDict(response).get("rows_affected")
    except Exception:
        return None
    if rows is None:
        return None
    try:
        rows = int(rows)
    except (TypeError, ValueError):
        return None
    return rows if rows >= 0 else None


def _asset_report(done: Any, catalog: Any) -> AssetReport | None:
    """The asset row of a finished node that materializes one (see asset_events.py)."""
    node = done.node
    if not node.asset_key or not node.assets_enabled or node.resource_type == "source":
        return None
    upstream = sorted({parent.asset_key for parent in upstream_asset_nodes(node, catalog) if parent.asset_key})
    metadata = getattr(done, "metadata", None)
    return AssetReport(
        key=node.asset_key,
        upstream=tuple(upstream),
        outcome=ASSET_OUTCOMES[classify(done.status).outcome],
        row_count=getattr(metadata, "row_count", None),
    )


def build_report(
    finished: Mapping[str, Any],
    *,
    project: str,
    command: str,
    args: Sequence[str] = (),
    with_asset_keys: bool = True,
    scrub: Callable[[str], str] = lambda text: text,
    error: BaseException | None = None,
    dbt_statuses: Sequence[str] = (),
    catalog: Any = None,
) -> RunReport:
    """A report from the recorder's ``finished`` nodes (unique_id -> FinishedNode).

    ``dbt_statuses`` are the statuses of dbt's own result, run hooks included, which dbt's
    closing line counts. The assets are listed only with the ``catalog`` their lineage
    comes from."""
    nodes = []
    assets = []
    for done in finished.values():
        node = done.node
        key = node.asset_key if with_asset_keys else None
        run_result = done.run_result
        duration = getattr(run_result, "execution_time", None)
        nodes.append(
            NodeReport(
                unique_id=node.unique_id,
                name=node.name,
                resource_type=node.resource_type,
                status=done.status,
                message=(done.message or "").strip(),
                duration=None if classify(done.status).skipped or duration is None else float(duration),
                rows_affected=_rows_affected(run_result),
                asset_key=key,
                path=node.original_file_path,
                task_run_id=done.task_run_id,
                task_run_name=node.task_run_name,
            )
        )
        if with_asset_keys and catalog is not None:
            asset = _asset_report(done, catalog)
            if asset is not None:
                assets.append(asset)
    assets.sort(key=lambda a: a.key)
    nodes.sort(key=lambda n: (_TYPE_ORDER.get(n.resource_type, 9), n.resource_type, n.name, n.unique_id))
    error_text = ""
    if error is not None:
        error_text = scrub(f"{type(error).__name__}: {str(error).strip()}")
    return RunReport(
        project=project,
        command=command,
        args=tuple(scrub(a) for a in args),
        nodes=nodes,
        error=error_text,
        dbt_statuses=tuple(dbt_statuses),
        assets=assets,
    )


# -- rendering -----------------------------------------------------------------------
def _cell(text: Any) -> str:
    value = "" if text is None else str(text)
    value = " ".join(value.split())
    if len(value) > _MAX_CELL:
        value = value[: _MAX_CELL - 1] + "…"
    return value.replace("|", "\\|")


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _fenced(text: str) -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}text\n{text}\n{fence}"


def _key_list(keys: Sequence[str]) -> str:
    """Asset keys as code, comma-separated, within one cell's length: as many whole keys as
    fit, then how many more."""
    items = [f"`{_cell(key)}`" for key in keys]
    text = ", ".join(items)
    shown = len(items)
    while len(text) > _MAX_CELL and shown > 1:
        shown -= 1
        text = ", ".join(items[:shown]) + f", … {len(items) - shown} more"
    return text


def _assets_section(report: RunReport) -> list[str]:
    if not report.assets:
        return []
    lines = [
        f"## Assets ({len(report.assets)})",
        "",
        # The long upstream list last, so that a narrow page still shows the outcome.
        "| Asset | Outcome | Row count | Upstream assets |",
        "| :-- | :-- | --: | :-- |",
    ]
    for asset in report.assets[:MAX_MARKDOWN_NODES]:
        rows = "" if asset.row_count is None else str(asset.row_count)
        lines.append(f"| `{_cell(asset.key)}` | {asset.outcome} | {rows} | {_key_list(asset.upstream)} |")
    hidden = len(report.assets) - MAX_MARKDOWN_NODES
    if hidden > 0:
        lines += [
            "",
            f"… and {hidden} more assets: their keys and statuses are in the table artifact `{report.table_key}`.",
        ]
    lines.append("")
    # Prefect's open-source server has no assets page: the event feed is where the
    # materializations (with this lineage) and references are.
    if report.asset_events_url:
        lines += [f"Their events, with this lineage: [this flow run's asset events]({report.asset_events_url})", ""]
    elif report.flow_run_id is not None:
        lines += [
            "Their events, with this lineage, are in the Prefect UI's Event Feed: "
            f"resource `prefect.flow-run.{report.flow_run_id}`, events `{ASSET_EVENTS}`.",
            "",
        ]
    return lines


def render_markdown(report: RunReport) -> str:
    lines = [f"# dbt {report.command} · {report.project}", "", f"`{report.command_line}`", ""]
    lines += [f"**{report.stats_line}**", ""]
    if report.error:
        lines += ["## dbt error", "", _fenced(report.error), ""]
    if report.nodes:
        lines += ["| Status | Nodes |", "| :-- | --: |"]
        lines += [f"| {_cell(status)} | {count} |" for status, count in report.status_counts.items()]
        lines.append("")
    else:
        lines += ["dbt ran no nodes.", ""]
    for title, listed in (("Failures", report.failures), ("Warnings", report.warnings)):
        if not listed:
            continue
        lines += [f"## {title} ({len(listed)})", ""]
        for node in listed:
            where = f" · `{node.path}`" if node.path else ""
            lines += [f"**{node.task_run_name}** · {node.status}{where}", ""]
            lines += [_fenced(node.message or f"dbt status: {node.status}"), ""]
    lines += _assets_section(report)
    slowest = report.slowest()
    if slowest:
        lines += ["## Slowest nodes", "", "| Node | Status | Duration (s) |", "| :-- | :-- | --: |"]
        lines += [f"| {_cell(n.task_run_name)} | {n.status} | {_seconds(n.duration)} |" for n in slowest]
        lines.append("")
    if report.nodes:
        lines += [
            f"## Nodes ({len(report.nodes)})",
            "",
            "| Node | Type | Status | Duration (s) | Rows affected | Asset key |",
            "| :-- | :-- | :-- | --: | --: | :-- |",
        ]
        for n in report.nodes[:MAX_MARKDOWN_NODES]:
            rows = "" if n.rows_affected is None else str(n.rows_affected)
            asset = f"`{_cell(n.asset_key)}`" if n.asset_key else ""
            lines.append(
                f"| {_cell(n.name)} | {n.resource_type} | {n.status} | {_seconds(n.duration)} | {rows} | {asset} |"
            )
        hidden = len(report.nodes) - MAX_MARKDOWN_NODES
        if hidden > 0:
            lines += ["", f"… and {hidden} more nodes: see the table artifact `{report.table_key}`."]
        lines.append("")
    return "\n".join(lines)


def table_rows(report: RunReport) -> list[dict[str, Any]]:
    return [
        {
            "node": n.name,
            "resource_type": n.resource_type,
            "status": n.status,
            "duration_s": None if n.duration is None else round(n.duration, 3),
            "rows_affected": n.rows_affected,
            "asset_key": n.asset_key,
            "message": n.message,
            "unique_id": n.unique_id,
        }
        for n in report.nodes
    ]


def description(report: RunReport) -> str:
    outcome = f"{report.stats_line}, then dbt stopped with an error" if report.error else report.stats_line
    return f"`{report.command_line}` in project {report.project}: {outcome}"


# -- links to the Prefect UI ---------------------------------------------------------
# The event feed is a page of the UI Prefect's open-source server serves (and Prefect
# Cloud too), and it takes its filters in the query string.
def ui_url() -> str | None:
    """The Prefect UI's address; None in ephemeral mode, whose server is gone with the process."""
    settings = get_current_settings()
    if not settings.api.url or not settings.ui_url:
        return None
    return settings.ui_url.rstrip("/")


def _utc_text(moment: dt.datetime) -> str:
    # What the UI writes back into its own URL (JavaScript's toISOString).
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def event_feed_url(
    ui: str, flow_run_id: Any, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> str:
    """The event feed, showing the asset events related to one flow run.

    ``resource`` matches the event's resource or a related one (every event emitted in a
    flow run is related to it); ``events`` ending in ``*`` is a name prefix. Without
    ``since`` and ``until`` the page shows the past day only."""
    params = [("resource", f"prefect.flow-run.{flow_run_id}"), ("events", ASSET_EVENTS)]
    if since is not None and until is not None:
        params += [("type", "range"), ("startDate", _utc_text(since)), ("endDate", _utc_text(until))]
    return f"{ui}/events?{urlencode(params, safe=':*')}"


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
    """Create the markdown and table artifacts on the flow (and task) run; return their ids."""
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
        return [client.create_artifact(artifact=a).id for a in artifacts]
    with get_client(sync_client=True) as sync_client:
        return [sync_client.create_artifact(artifact=a).id for a in artifacts]


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
) -> RunReport | None:
    """The runner's single entry point: build the report of one invocation and publish it.

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
        ui = ui_url()
        if ui and report.assets:
            window = _asset_events_window(recorder.finished)
            since, until = window if window is not None else (None, None)
            report.asset_events_url = event_feed_url(ui, report.flow_run_id, since, until)
        parent = target.parent_task_run
        publish(report, target.flow_run.id, parent.id if parent is not None else None, client=client)
        return report
    except Exception as exc:
        _logger.warning("dbt-prefect could not create the run report artifact: %s", exc)
        return None
