"""No dbt log line is lost, duplicated or reordered on its way to the Prefect API.

One `dbt build` of the shop on 4 threads, inside a flow, against the real Prefect server.
What dbt itself emitted is captured by a dbt callback (the reference); what the server
holds is read back through the client and compared with it, line for line: per node on
the node's task run, and the run-level lines on the flow run. Every model, seed and
snapshot also logs a burst of info lines (and debug lines, which must not be shipped)
from a pre-hook and a post-hook, so each task run holds dozens of lines emitted within
milliseconds of each other while other nodes log on other threads; and one warning, which
dbt emits without a node (exceptions.warn), so run-level lines come from worker threads too.
"""

from __future__ import annotations

import calendar
import collections
import datetime as dt
import itertools
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from prefect import flow
from prefect.context import FlowRunContext

from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings
from support.prefect_api import by_name, logs, poll, task_runs
from support.projects import make_shop_copy

pytestmark = pytest.mark.usefixtures("prefect_server")

BURST_LINES = 20
LOG_BURST_MACRO = """
{% macro log_burst(phase, lines) %}
    {%- if execute -%}
        {%- for i in range(1, lines + 1) -%}
            {%- do log(phase ~ " " ~ this.identifier ~ " line " ~ i ~ " of " ~ lines, info=True) -%}
            {%- do log("debug line, never shipped: " ~ phase ~ " " ~ i) -%}
        {%- endfor -%}
        {%- do log(phase ~ " " ~ this.identifier ~ ": 100% literal %s %(name)s naïve ✓", info=True) -%}
        {%- if phase == "after" -%}
            {%- do exceptions.warn("after " ~ this.identifier ~ ": a warning line") -%}
        {%- endif -%}
    {%- endif -%}
{% endmacro %}
"""
# The dbt levels the runner ships at its default level (INFO under conftest); debug and
# test lines stay in dbt's own log file.
SHIPPED_LEVELS = {"info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
SETTLE_SECONDS = 1.0


@dataclass(frozen=True)
class DbtLine:
    """One line dbt emitted, as the runner must ship it."""

    unique_id: str | None
    node_label: str | None  # "<resource type> <name>": the default task-run name
    thread: str
    timestamp_us: int
    level: int
    message: str

    @property
    def as_shipped(self) -> tuple[int, int, str]:
        return (self.timestamp_us, self.level, self.message)


@dataclass
class LoggedBuild:
    flow_run_id: UUID
    dbt_lines: list[DbtLine]  # shipped-level lines, in the order dbt handed them to callbacks
    invoke_started_us: int
    invoke_returned_us: int
    logs_at_return: list[Any]
    logs_settled: list[Any]
    task_runs: list[Any]

    def in_invoke(self, records: list[Any]) -> list[Any]:
        """The records of this invoke: every task-run line, and the flow-run lines logged
        while invoke ran (not the flow engine's 'Beginning flow run' and 'Finished' lines)."""
        return [
            r
            for r in records
            if r.task_run_id is not None
            or self.invoke_started_us <= timestamp_us(r.timestamp) <= self.invoke_returned_us
        ]


def timestamp_us(moment: dt.datetime) -> int:
    # Exact integer arithmetic (the client's datetimes are pendulum's, whose durations
    # do not divide by a plain timedelta).
    return calendar.timegm(moment.utctimetuple()) * 1_000_000 + moment.microsecond


def add_log_bursts(project: Path) -> None:
    """Every model, seed and snapshot logs a burst before and after it builds."""
    (project / "macros" / "log_burst.sql").write_text(LOG_BURST_MACRO)
    path = project / "dbt_project.yml"
    data = yaml.safe_load(path.read_text())
    for section in ("seeds", "models", "snapshots"):
        config = data[section]
        config["+pre-hook"] = f"{{{{ log_burst('before', {BURST_LINES}) }}}}"
        config["+post-hook"] = [config["+post-hook"], f"{{{{ log_burst('after', {BURST_LINES}) }}}}"]
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def settled_logs(flow_run_id: UUID) -> list[Any]:
    """The flow run's logs once no new line came for SETTLE_SECONDS (at most 30 s)."""
    seen = {"count": -1, "since": time.monotonic()}

    def settled(found: list[Any]) -> bool:
        now = time.monotonic()
        if len(found) != seen["count"]:
            seen.update(count=len(found), since=now)
            return False
        return now - seen["since"] >= SETTLE_SECONDS

    return poll(lambda: logs(flow_run_id), settled, timeout=30)


@pytest.fixture(scope="module")
def logged_build(tmp_path_factory: pytest.TempPathFactory) -> LoggedBuild:
    project = make_shop_copy(tmp_path_factory.mktemp("log-delivery"))
    add_log_bursts(project)
    settings = PrefectDbtSettings(project_dir=project, profiles_dir=project)
    shipped_threshold = max(
        SHIPPED_LEVELS.get(settings.log_level, logging.DEBUG),
        logging.getLogger("prefect.flow_runs").getEffectiveLevel(),
    )
    assert shipped_threshold == logging.INFO, "conftest runs Prefect, so the runner, at INFO"
    emitted: list[DbtLine] = []

    def keep(msg: Any) -> None:
        # Runs in dbt's threads, in the order each thread emits; list.append is atomic.
        level = SHIPPED_LEVELS.get(msg.info.level)
        if level is None:
            return
        node = msg.data.node_info if "node_info" in msg.data.DESCRIPTOR.fields_by_name else None
        unique_id = node.unique_id if node is not None and node.unique_id else None
        ts = msg.info.ts
        emitted.append(
            DbtLine(
                unique_id=unique_id,
                node_label=f"{node.resource_type} {node.node_name}" if unique_id else None,
                thread=msg.info.thread,
                timestamp_us=ts.seconds * 1_000_000 + ts.nanos // 1000,
                level=level,
                # The runner strips dbt's colours; nothing else changes (no secrets here).
                message=ANSI_ESCAPE.sub("", msg.info.msg),
            )
        )

    seen: dict[str, Any] = {}

    @flow(name="dbt-prefect-log-delivery")
    def dbt_flow() -> None:
        flow_run_id = FlowRunContext.get().flow_run.id
        seen["flow_run_id"] = flow_run_id
        seen["started"] = time.time()
        PrefectDbtRunner(settings=settings).invoke(["build", "--threads", "4"], callbacks=[keep])
        seen["returned"] = time.time()
        # Read at once: invoke promises its log lines are delivered when it returns.
        seen["logs_at_return"] = logs(flow_run_id)

    assert dbt_flow(return_state=True).is_completed()
    flow_run_id = seen["flow_run_id"]
    return LoggedBuild(
        flow_run_id=flow_run_id,
        dbt_lines=emitted,
        invoke_started_us=int(seen["started"] * 1_000_000),
        invoke_returned_us=int(seen["returned"] * 1_000_000),
        logs_at_return=seen["logs_at_return"],
        logs_settled=settled_logs(flow_run_id),
        task_runs=task_runs(flow_run_id),
    )


def expected_by_task_run(build: LoggedBuild) -> tuple[dict[str, list[DbtLine]], list[DbtLine]]:
    """dbt's lines by task-run name, in dbt's order; and the lines of no task run (run-level
    lines, and those of hooks and ephemeral models, which get no task run), in dbt's order."""
    names = set(by_name(build.task_runs))
    per_node: dict[str, list[DbtLine]] = collections.defaultdict(list)
    run_level: list[DbtLine] = []
    for line in build.dbt_lines:
        if line.node_label in names:
            per_node[line.node_label].append(line)
        else:
            run_level.append(line)
    return per_node, run_level


def received_by_task_run(build: LoggedBuild, records: list[Any]) -> tuple[dict[str, list[Any]], list[Any]]:
    """The server's records of this invoke by task-run name, and the flow run's own, in the
    server's order."""
    names = {run.id: run.name for run in build.task_runs}
    per_node: dict[str, list[Any]] = collections.defaultdict(list)
    run_level: list[Any] = []
    for record in build.in_invoke(records):
        if record.task_run_id is None:
            run_level.append(record)
        else:
            per_node[names.get(record.task_run_id, f"unknown task run {record.task_run_id}")].append(record)
    return per_node, run_level


def shipped_lines(records: list[Any]) -> list[tuple[int, int, str]]:
    return [(timestamp_us(r.timestamp), r.level, r.message) for r in records]


def difference(expected: list[tuple[int, int, str]], received: list[tuple[int, int, str]]) -> str:
    """What differs between two line lists: counts, lines missing or extra, first reordering."""
    missing = collections.Counter(expected) - collections.Counter(received)
    extra = collections.Counter(received) - collections.Counter(expected)
    parts = [f"dbt emitted {len(expected)} line(s), the server holds {len(received)}"]
    if missing:
        parts.append(f"missing {sorted(missing.elements())}")
    if extra:
        parts.append(f"unexpected {sorted(extra.elements())}")
    if not missing and not extra:
        at = next(i for i, (e, r) in enumerate(zip(expected, received, strict=True)) if e != r)
        parts.append(f"out of order from position {at}: dbt {expected[at : at + 3]}, server {received[at : at + 3]}")
    return "; ".join(parts)


def dbt_order_is_timestamp_order(lines: list[DbtLine]) -> bool:
    """Whether dbt's timestamps strictly increase along its lines: otherwise the server,
    which sorts by timestamp alone, cannot give dbt's order back."""
    return all(a.timestamp_us < b.timestamp_us for a, b in itertools.pairwise(lines))


def test_the_build_interleaves_nodes_and_logs_dozens_of_lines_per_node(logged_build: LoggedBuild) -> None:
    """What the other tests rely on to mean anything."""
    per_node, run_level = expected_by_task_run(logged_build)
    assert len(logged_build.task_runs) == 36
    assert set(per_node) == {run.name for run in logged_build.task_runs}
    bursting = {name for name, lines in per_node.items() if len(lines) == 2 * (BURST_LINES + 1) + 2}
    assert len(bursting) == 13  # 3 seeds, 9 models, 1 snapshot: START, two bursts, OK
    # One warning per bursting node, from dbt's worker threads. dbt may add warnings of its
    # own (which the delivery tests check like any line); these are the ones we planted.
    warnings = [line for line in run_level if line.level == logging.WARNING]
    planted = collections.Counter(line.message for line in warnings if line.message.endswith(": a warning line"))
    assert planted == {f"after {name.split()[-1]}: a warning line": 1 for name in bursting}, [
        (line.thread, line.message[:200]) for line in warnings
    ]
    assert {line.thread for line in warnings} != {"MainThread"}
    assert any(line.message.startswith("Done. PASS=38 ") for line in run_level)
    # Each node's lines come from one of dbt's 4 threads, and another node's lines come
    # between a bursting node's first and last.
    assert all(len({line.thread for line in lines}) == 1 for lines in per_node.values())
    assert len({line.thread for lines in per_node.values() for line in lines}) == 4
    positions = collections.defaultdict(list)
    for position, line in enumerate(logged_build.dbt_lines):
        positions[line.node_label].append(position)
    assert any(positions[name][-1] - positions[name][0] >= len(positions[name]) for name in bursting)


def test_the_server_returns_a_flow_runs_logs_once_each_sorted_by_timestamp(logged_build: LoggedBuild) -> None:
    records = logged_build.logs_settled
    assert len({r.id for r in records}) == len(records)
    stamps = [r.timestamp for r in records]
    assert stamps == sorted(stamps)


def test_no_line_is_lost_or_added_in_total(logged_build: LoggedBuild) -> None:
    per_node, run_level = expected_by_task_run(logged_build)
    received = logged_build.in_invoke(logged_build.logs_settled)
    assert len(received) == len(logged_build.dbt_lines) == sum(map(len, per_node.values())) + len(run_level)


def test_every_node_line_reaches_its_task_run_once_in_dbt_order(logged_build: LoggedBuild) -> None:
    expected, _ = expected_by_task_run(logged_build)
    received, _ = received_by_task_run(logged_build, logged_build.logs_settled)
    wrong = {}
    for name in sorted(set(expected) | set(received)):
        dbt_lines = expected.get(name, [])
        server_lines = shipped_lines(received.get(name, []))
        if [line.as_shipped for line in dbt_lines] != server_lines:
            wrong[name] = difference([line.as_shipped for line in dbt_lines], server_lines)
            if not dbt_order_is_timestamp_order(dbt_lines):
                wrong[name] += " (dbt's own timestamps tie or go back in this node)"
    assert not wrong, "\n".join(f"{name}: {why}" for name, why in wrong.items())


def test_every_run_level_line_reaches_the_flow_run_once_in_dbt_order(logged_build: LoggedBuild) -> None:
    _, expected = expected_by_task_run(logged_build)
    _, received = received_by_task_run(logged_build, logged_build.logs_settled)
    # Run-level lines come from dbt's main thread and, for warnings, from its worker
    # threads: across threads, dbt's order is the order of its timestamps.
    expected_lines = sorted((line.as_shipped for line in expected), key=lambda line: line[0])
    assert shipped_lines(received) == expected_lines, difference(expected_lines, shipped_lines(received))


def test_every_line_is_on_the_server_when_invoke_returns(logged_build: LoggedBuild) -> None:
    at_return = shipped_lines(logged_build.in_invoke(logged_build.logs_at_return))
    settled = shipped_lines(logged_build.in_invoke(logged_build.logs_settled))
    assert at_return == settled, difference(settled, at_return)
