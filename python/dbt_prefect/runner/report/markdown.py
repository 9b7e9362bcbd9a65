"""The run report as markdown and as table rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dbt_prefect.runner.report.model import ASSET_EVENTS, MAX_CELL, MAX_MARKDOWN_NODES, RunReport


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


def _key_list(keys: Sequence[str]) -> str:
    """Asset keys as code, comma-separated, within one cell's length: as many whole keys as
    fit, then how many more."""
    items = [f"`{_cell(key)}`" for key in keys]
    text = ", ".join(items)
    shown = len(items)
    while len(text) > MAX_CELL and shown > 1:
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
