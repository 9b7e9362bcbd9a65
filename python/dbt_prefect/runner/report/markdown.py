"""The run report as markdown and as table rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dbt_prefect.runner.report.links import V1
from dbt_prefect.runner.report.mermaid import LOOKS, describe_folding, draw_lineage, short_name
from dbt_prefect.runner.report.model import ASSET_EVENTS, MAX_CELL, MAX_MARKDOWN_NODES, RunReport

# Names in the tables are cut in the middle beyond these lengths, so that each table
# stays inside the V2 UI's content column (about 690 px at a 1,400 px window).
NODE_NAME = 36
SLOWEST_NAME = 44
KEY_SHOWN = 44
UPSTREAM_NAME = 16
UPSTREAM_NAMES = 30


def _cell(text: Any) -> str:
    value = "" if text is None else str(text)
    value = " ".join(value.split())
    if len(value) > MAX_CELL:
        value = value[: MAX_CELL - 1] + "…"
    return value.replace("|", "\\|")


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _fenced(text: str) -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}text\n{text}\n{fence}"


def _lineage_section(report: RunReport) -> list[str]:
    if not report.lineage:
        return []
    pages = report.ui
    lineage = draw_lineage(report.lineage, pages.task_run if pages is not None else None)
    symbols = {name: look.symbol for name, look in LOOKS.items()}
    legend = (
        f"What this run built and read, left to right. Colour and words give each node's dbt status: "
        f"{symbols['succeeded']} success, {symbols['warned']} warn, {symbols['failed']} error or fail, "
        f"{symbols['skipped']} skipped, {symbols['noop']} no-op, {symbols['cached']} cached; "
        "dotted boxes were read, not run. Tests are counted on the node they check; a red (amber) border "
        "on a node that ran says one of its tests failed (warned)."
    )
    if pages is not None and any(node.task_run_id is not None for node in lineage.picture.shown):
        legend += " Click a node to open its task run."
    lines = ["## Lineage", "", legend, ""]
    if pages is not None and pages.served and pages.version == V1:
        # This server's users get V1 by default (V2 turned off, or an older Prefect).
        lines += ["Prefect's V1 UI shows the picture as its mermaid source; its V2 UI draws it.", ""]
    lines += ["```mermaid", lineage.text, "```", ""]
    folding = describe_folding(lineage.picture)
    if folding:
        lines += [*folding, ""]
    return lines


def _upstream_cell(keys: Sequence[str]) -> str:
    """How many upstream assets, and the first names (the last part of each key) that fit
    in UPSTREAM_NAMES characters: the column stays narrow on the V2 page, whose content
    column is about 690 px wide at 1,400; the lineage picture has the whole lineage."""
    if not keys:
        return ""
    names: list[str] = []
    for key in keys:
        name = short_name(key.rstrip("/").rsplit("/", 1)[-1], UPSTREAM_NAME)
        if names and len(", ".join([*names, name])) > UPSTREAM_NAMES:
            break
        names.append(name)
    more = ", …" if len(names) < len(keys) else ""
    return f"{len(keys)}: {_cell(', '.join(names))}{more}"


def _key_prefix(keys: Sequence[str]) -> str:
    """What every key starts with, up to a '/' past the scheme (``duckdb://shop/``); "" if nothing."""
    if not keys:
        return ""
    first, last = min(keys), max(keys)
    common = first[: next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), len(first))]
    prefix = common[: common.rfind("/") + 1]
    scheme = prefix.find("://")
    return prefix if scheme > 0 and len(prefix) > scheme + 3 else ""


def _assets_section(report: RunReport) -> list[str]:
    if not report.assets:
        return []
    listed = report.assets[:MAX_MARKDOWN_NODES]
    # Keys run long (relation names): the column shows what follows their common start,
    # cut in the middle past KEY_SHOWN characters, and links each to its events.
    prefix = _key_prefix([asset.key for asset in listed])
    pages, window = report.ui, report.asset_events_window or (None, None)
    lines = [f"## Assets ({len(report.assets)})", ""]
    linked = "each links to that asset's events" if pages is not None else ""
    if prefix:
        lines += [f"Keys start with `{_cell(prefix)}`" + (f"; {linked}." if linked else "."), ""]
    elif linked:
        lines += ["Each key links to that asset's events.", ""]
    lines += [
        # The upstream column last, so that a narrow page still shows the outcome.
        "| Asset | Outcome | Row count | Upstream assets |",
        "| :-- | :-- | --: | :-- |",
    ]
    for asset in listed:
        rows = "" if asset.row_count is None else str(asset.row_count)
        shown = f"`{_cell(short_name(asset.key[len(prefix) :], KEY_SHOWN))}`"
        if pages is not None:
            shown = f"[{shown}]({pages.asset_events(asset.key, *window)})"
        lines.append(f"| {shown} | {asset.outcome} | {rows} | {_upstream_cell(asset.upstream)} |")
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
    lines += _lineage_section(report)
    lines += _assets_section(report)
    slowest = report.slowest()
    if slowest:
        lines += ["## Slowest nodes", "", "| Node | Status | Duration (s) |", "| :-- | :-- | --: |"]
        lines += [
            f"| {_cell(short_name(n.task_run_name, SLOWEST_NAME))} | {n.status} | {_seconds(n.duration)} |"
            for n in slowest
        ]
        lines.append("")
    if report.nodes:
        lines += [
            f"## Nodes ({len(report.nodes)})",
            "",
            "| Node | Type | Status | Duration (s) | Rows affected |",
            "| :-- | :-- | :-- | --: | --: |",
        ]
        for n in report.nodes[:MAX_MARKDOWN_NODES]:
            rows = "" if n.rows_affected is None else str(n.rows_affected)
            name = _cell(short_name(n.name, NODE_NAME))
            lines.append(f"| {name} | {n.resource_type} | {n.status} | {_seconds(n.duration)} | {rows} |")
        hidden = len(report.nodes) - MAX_MARKDOWN_NODES
        if hidden > 0:
            lines += ["", f"… and {hidden} more nodes: see the table artifact `{report.table_key}`."]
        lines += [
            "",
            f"Whole names, asset keys and messages of every node: the table artifact `{report.table_key}`.",
        ]
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
