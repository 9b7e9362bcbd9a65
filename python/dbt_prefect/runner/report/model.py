"""The run report's records: what one invocation did to each node and asset, and the counts."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from google.protobuf.json_format import MessageToDict

from dbt_prefect.model.assets import upstream_asset_nodes
from dbt_prefect.model.statuses import Outcome, classify, summary_counts, summary_line
from dbt_prefect.runner.report.lineage import lineage_nodes
from dbt_prefect.runner.report.mermaid import LineageNode

# Commands that run no dbt node: they get no report.
NO_REPORT_COMMANDS = frozenset({"deps", "clean", "debug", "init", "parse", "list", "ls", "run-operation", "docs serve"})

SLOWEST = 10
# The markdown lists at most this many nodes, and as many assets; the table artifact
# always has all of them.
MAX_MARKDOWN_NODES = 500
MAX_CELL = 300

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
    # The same events' time range, which each asset's own link to its events keeps to.
    asset_events_window: tuple[Any, Any] | None = None
    # The lineage picture's nodes: what ran, what it read, with their tests (lineage.py).
    lineage: list[LineageNode] = field(default_factory=list)
    # The pages of the UI the server's users get by default (links.UiPages), when known:
    # the picture links each node to its task run there.
    ui: Any = None
    # The markdown artifact, once published.
    artifact_id: Any = None

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
    closing line counts. The assets and the lineage picture are there only with the
    ``catalog`` their lineage comes from."""
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
        lineage=lineage_nodes(finished, catalog) if catalog is not None else [],
    )


# -- rendering -----------------------------------------------------------------------
