"""The run report: what one dbt invocation did, as Prefect artifacts and as a terminal summary.

Every ``invoke`` inside a flow or task publishes two artifacts, under keys that stay the
same from run to run so that Prefect keeps their history side by side:

- ``dbt-<project>-<command>`` (markdown): counts by status, failures and warnings with
  their messages, a lineage picture of what ran (a mermaid flowchart coloured by status,
  which Prefect's V2 UI draws; mermaid.py), the assets the run materialized with their
  upstream assets, outcome and row count (and a link to their events in Prefect's event
  feed), the 10 slowest nodes, and a table of every node with its resource type, status,
  duration, rows affected and asset key;
- ``dbt-<project>-<command>-nodes`` (table): one row per node, for sorting and comparing.

``<project>`` and ``<command>`` are slugified: lowercase, every run of other characters a
dash. ``dbt build`` of project ``shop`` gives ``dbt-shop-build``; ``dbt source
freshness`` of ``jaffle_shop`` gives ``dbt-jaffle-shop-source-freshness``.
"""

from dbt_prefect.runner.report.links import UiPages, event_feed_url, ui_pages, ui_url, v2_event_feed_url
from dbt_prefect.runner.report.markdown import description, render_markdown, table_rows
from dbt_prefect.runner.report.mermaid import CheckCounts, LineageNode, draw_lineage
from dbt_prefect.runner.report.model import (
    ASSET_OUTCOMES,
    MAX_MARKDOWN_NODES,
    NO_REPORT_COMMANDS,
    AssetReport,
    NodeReport,
    RunReport,
    artifact_key,
    build_report,
    project_name,
    slug,
)
from dbt_prefect.runner.report.publish import publish, publish_run_report

__all__ = [
    "ASSET_OUTCOMES",
    "MAX_MARKDOWN_NODES",
    "NO_REPORT_COMMANDS",
    "AssetReport",
    "CheckCounts",
    "LineageNode",
    "NodeReport",
    "RunReport",
    "UiPages",
    "artifact_key",
    "build_report",
    "description",
    "draw_lineage",
    "event_feed_url",
    "project_name",
    "publish",
    "publish_run_report",
    "render_markdown",
    "slug",
    "table_rows",
    "ui_pages",
    "ui_url",
    "v2_event_feed_url",
]
