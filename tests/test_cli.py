"""The `dbt-prefect` command line, run as a subprocess against the integration project and
the session's Prefect server; the live display is driven in a real pseudo-terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterName,
)

from support.projects import make_shop_copy
from dbt_prefect.cli.main import dbt_usage_error, app
from support.prefect_api import state_of, task_runs
from test_runner import EXPECTED_BUILD_TASK_RUNS

pytestmark = pytest.mark.usefixtures("prefect_server")

DBT_PREFECT = Path(sys.executable).with_name("dbt-prefect")
NODE_LINE = re.compile(r"^ ?(\d+)/(\d+) (OK|PASS|FAIL|ERROR|WARN|SKIP)\s+(\w+) (\S+)(?: \[\d+\.\d\ds\])?$")
FAIL_MESSAGE = "Got 10 results, configured to fail if != 0"


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str
    flow_run_name: str


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_PROJECT_DIR") and k != "CI"}
    env.update(extra)
    return env


def dbt_prefect(project: Path, *args: str, env: dict[str, str] | None = None, name: str | None = None) -> CliRun:
    """Run `dbt-prefect <args> --project-dir P --profiles-dir P` with a unique flow run name."""
    name = name or f"cli-{uuid.uuid4().hex[:10]}"
    argv = [str(DBT_PREFECT), *args, "--project-dir", str(project), "--profiles-dir", str(project), "--flow-run-name", name]
    process = subprocess.run(argv, cwd=project.parent, env=env or cli_env(), capture_output=True, text=True, timeout=300)
    return CliRun(process.returncode, process.stdout, process.stderr, name)


def flow_run_named(name: str) -> Any:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
        assert len(runs) == 1, runs
        return runs[0]


def flow_name_of(flow_run: Any) -> str:
    with get_client(sync_client=True) as client:
        return client.read_flow(flow_run.flow_id).name


def shop_flow_runs_mentioning(fragments: list[str]) -> list[Any]:
    """Flow runs of the shop's flow whose dbt arguments mention one of `fragments` (other
    test files run the shop's flow at the same time, with other arguments)."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["shop"])))
    return [run for run in runs if any(f in json.dumps(run.parameters, default=str) for f in fragments)]


def artifacts_of(flow_run_id: Any) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    by_key = {artifact.key: artifact for artifact in found}
    assert len(by_key) == len(found), [a.key for a in found]
    return by_key


def node_lines(stdout: str) -> list[tuple[int, int, str, str]]:
    lines = []
    for line in stdout.splitlines():
        match = NODE_LINE.match(line)
        if match:
            lines.append((int(match[1]), int(match[2]), match[3], f"{match[4]} {match[5]}"))
    return lines


def summary_of(stdout: str) -> list[str]:
    """The lines from dbt-prefect's closing summary on, with the run time masked."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Finished dbt "))
    return [re.sub(r" in \d+\.\ds\.$", " in N.Ns.", line) for line in lines[start:]]


_CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def run_in_terminal(argv: list[str], env: dict[str, str], cwd: Path, columns: int, rows: int) -> tuple[int, str]:
    """Run argv with a pseudo-terminal as its stdin, stdout and stderr; return its exit code and output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, start_new_session=True)
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's last writer has gone
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return process.wait(timeout=30), output.decode("utf-8", errors="replace")


def screen_of(stream: str, columns: int) -> tuple[list[str], bool]:
    """What a terminal shows after `stream` (scrollback included), and whether the cursor is visible.

    Handles what rich writes: text, CR/LF, cursor up, erase line, cursor visibility, colours.
    """
    lines: list[list[str]] = [[]]
    row = col = 0
    wrap_pending = False
    cursor_visible = True
    i = 0
    while i < len(stream):
        char = stream[i]
        if char == "\x1b":
            match = _CSI.match(stream, i)
            assert match, f"unexpected escape sequence {stream[i:i + 10]!r}"
            params, final = match.groups()
            i = match.end()
            count = int(params) if params.isdigit() else 1
            if final == "A":
                row, wrap_pending = max(0, row - count), False
            elif final == "K":
                if params == "2":
                    lines[row] = []
                else:
                    del lines[row][col:]
            elif final in "hl" and params == "?25":
                cursor_visible = final == "h"
            elif final != "m":
                raise AssertionError(f"unexpected escape sequence {match.group(0)!r}")
            continue
        i += 1
        if char == "\r":
            col, wrap_pending = 0, False
        elif char == "\n":
            row, wrap_pending = row + 1, False
            if row == len(lines):
                lines.append([])
        elif char >= " ":
            if wrap_pending:
                row, col, wrap_pending = row + 1, 0, False
                if row == len(lines):
                    lines.append([])
            line = lines[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = char
            else:
                line.append(char)
            col += 1
            if col == columns:
                col, wrap_pending = columns - 1, True
    text = ["".join(line).rstrip() for line in lines]
    while text and not text[-1]:
        text.pop()
    return text, cursor_visible


# -- a green build, in a real terminal -----------------------------------------------
COLUMNS, ROWS = 100, 30


@dataclass
class TerminalRun:
    code: int
    stream: str  # everything written to the terminal
    screen: list[str]  # what the terminal shows at the end, scrollback included
    cursor_visible: bool
    flow_run_name: str


@pytest.fixture(scope="module")
def green(tmp_path_factory: pytest.TempPathFactory) -> TerminalRun:
    project = make_shop_copy(tmp_path_factory.mktemp("cli-green"))
    name = f"cli-tty-{uuid.uuid4().hex[:8]}"
    argv = [str(DBT_PREFECT), "build", "--project-dir", str(project), "--profiles-dir", str(project)]
    argv += ["--flow-run-name", name, "--tag", "nightly", "--tag", "cli"]
    env = cli_env(TERM="xterm-256color", COLUMNS=str(COLUMNS), LINES=str(ROWS))
    code, stream = run_in_terminal(argv, env=env, cwd=project.parent, columns=COLUMNS, rows=ROWS)
    screen, cursor_visible = screen_of(stream, COLUMNS)
    return TerminalRun(code, stream, screen, cursor_visible, name)


def test_the_live_display_shows_progress_in_a_terminal_and_finishes_cleanly(green: TerminalRun) -> None:
    assert green.code == 0, "\n".join(green.screen)
    # While dbt ran, the display was redrawn in place with the nodes done so far, the
    # counts and the nodes running at that moment.
    plain = _CSI.sub("", green.stream)
    done_counts = [int(n) for n in re.findall(r"(\d+)/36 nodes", plain)]
    assert done_counts == sorted(done_counts)
    assert any(0 < n < 36 for n in done_counts), done_counts
    assert re.search(r"running: (seed|model|test|snapshot|unit_test) \w+", plain)
    assert re.search(r"pass [1-9]\d? · warn 0 · error 0 · skip 0", plain)
    # The final screen: the finished display once, then dbt's summary; no redraw left behind.
    name = green.flow_run_name
    assert [re.sub(r" in \d+\.\ds\.$", " in N.Ns.", line) for line in green.screen] == [
        f"Running dbt build of project shop in Prefect flow run '{name}'",
        f"✓ dbt build · shop · flow run '{name}'",
        green.screen[2],
        "pass 36 · warn 0 · error 0 · skip 0",
        "",
        "Finished dbt build of 36 nodes in N.Ns.",
        "",
        "Completed successfully",
        "",
        "Done. PASS=38 WARN=0 ERROR=0 SKIP=0 NO-OP=0 TOTAL=38",
        f"Prefect flow run '{name}' of flow 'shop': Completed",
        # The test server runs without the UI, so there is no link to print.
        "Run report: Prefect artifact dbt-shop-build",
    ]
    assert re.fullmatch(r"━{40}  36/36 nodes  0:\d\d", green.screen[2]), green.screen[2]
    assert green.cursor_visible
    # dbt's own lines go to Prefect, not to the terminal; nothing leaks at exit.
    assert "Traceback" not in plain and "nanobind" not in plain


def test_the_flow_is_named_after_the_project_and_carries_the_name_tags_and_arguments(green: TerminalRun) -> None:
    flow_run = flow_run_named(green.flow_run_name)
    assert flow_name_of(flow_run) == "shop"
    assert state_of(flow_run) == ("COMPLETED", "Completed")
    assert sorted(flow_run.tags) == ["cli", "nightly"]
    assert flow_run.parameters == {"command": "build", "args": ["build"]}
    runs = task_runs(flow_run.id)
    assert sorted(run.name for run in runs) == EXPECTED_BUILD_TASK_RUNS
    assert all(sorted(run.tags) == ["cli", "nightly"] for run in runs)


def test_the_run_report_artifacts_describe_every_node(green: TerminalRun) -> None:
    flow_run = flow_run_named(green.flow_run_name)
    artifacts = artifacts_of(flow_run.id)
    assert sorted(artifacts) == ["dbt-shop-build", "dbt-shop-build-nodes"]
    report, table = artifacts["dbt-shop-build"], artifacts["dbt-shop-build-nodes"]
    assert (report.type, table.type) == ("markdown", "table")
    assert report.description == "`dbt build` in project shop: PASS=38 WARN=0 ERROR=0 SKIP=0 NO-OP=0 TOTAL=38"
    markdown = report.data.splitlines()
    assert markdown[:11] == [
        "# dbt build · shop",
        "",
        "`dbt build`",
        "",
        "**PASS=38 WARN=0 ERROR=0 SKIP=0 NO-OP=0 TOTAL=38**",
        "",
        "| Status | Nodes |",
        "| :-- | --: |",
        "| pass | 23 |",
        "| success | 13 |",
        "",
    ]
    assert "## Failures" not in report.data
    slowest = markdown.index("## Slowest nodes")
    assert markdown[slowest + 2 : slowest + 4] == ["| Node | Status | Duration (s) |", "| :-- | :-- | --: |"]
    ten = markdown[slowest + 4 : slowest + 14]
    # A long name is cut in the middle (…), so that the table fits the V2 page.
    assert all(re.fullmatch(r"\| \w+ [\w…]+ \| (success|pass) \| \d+\.\d\d \|", line) for line in ten), ten
    durations = [float(line.split(" | ")[-1].rstrip(" |")) for line in ten]
    assert durations == sorted(durations, reverse=True)
    assert markdown[slowest + 14] == ""
    nodes = markdown.index("## Nodes (36)")
    # The asset keys are in the Assets section and the table artifact: the node table keeps
    # to what fits the V2 page's content column (long names are cut in the middle).
    assert markdown[nodes + 2] == "| Node | Type | Status | Duration (s) | Rows affected |"
    masked = [re.sub(r"\| \d+\.\d\d \|", "| T |", line) for line in markdown[nodes + 4 : nodes + 40]]
    assert masked[:5] == [
        "| raw_customers | seed | success | T | 21 |",
        "| raw_orders | seed | success | T | 30 |",
        "| raw_products | seed | success | T | 10 |",
        "| customers_snapshot | snapshot | success | T |  |",
        "| customers | model | success | T |  |",
    ]
    assert "| internal_order_audit | model | success | T |  |" in masked
    assert masked[-1] == "| test_customers_seg…nd_lifetime_value | unit_test | pass | T |  |"
    # Internal models opt out of assets (meta.prefect.enable_assets: false).
    assets = report.data.split("## Assets (12)", 1)[1].split("## Slowest nodes", 1)[0]
    assert "main_marts/orders`" in assets and "internal_order_audit" not in assets

    rows = json.loads(table.data)
    assert len(rows) == 36
    assert sorted(f"{r['resource_type']} {r['node']}" for r in rows) == EXPECTED_BUILD_TASK_RUNS
    raw_orders = next(r for r in rows if r["node"] == "raw_orders")
    assert raw_orders["duration_s"] > 0
    assert {k: v for k, v in raw_orders.items() if k != "duration_s"} == {
        "node": "raw_orders",
        "resource_type": "seed",
        "status": "success",
        "rows_affected": 30,
        "asset_key": "duckdb://shop/main_raw/raw_orders",
        "message": "INSERT 30",
        "unique_id": "seed.shop.raw_orders",
    }


# -- failures ------------------------------------------------------------------------
def test_a_failing_test_exits_1_fails_the_flow_and_is_summarised_with_its_message(tmp_path: Path) -> None:
    project = make_shop_copy(tmp_path)
    run = dbt_prefect(project, "build", "--vars", "{fail_demo_test: true}")
    assert run.code == 1, run.stdout + run.stderr
    # Not a terminal: plain lines, one per node as it finishes, as dbt prints them.
    lines = run.stdout.splitlines()
    assert lines[0] == f"Running dbt build of project shop in Prefect flow run '{run.flow_run_name}'"
    nodes = node_lines(run.stdout)
    assert lines[1:38] == [line for line in lines[1:38] if NODE_LINE.match(line)]
    assert [(done, total) for done, total, _, _ in nodes] == [(i, 37) for i in range(1, 38)]
    assert sorted(name for *_, name in nodes) == sorted([*EXPECTED_BUILD_TASK_RUNS, "test assert_demo_failure"])
    labels = {(name.split(" ")[0], label) for _, _, label, name in nodes if name != "test assert_demo_failure"}
    assert labels == {("seed", "OK"), ("model", "OK"), ("snapshot", "OK"), ("test", "PASS"), ("unit_test", "PASS")}
    assert [label for _, _, label, name in nodes if name == "test assert_demo_failure"] == ["FAIL"]
    assert summary_of(run.stdout) == [
        "Finished dbt build of 37 nodes in N.Ns.",
        "",
        "Completed with 1 error and 0 warnings:",
        "",
        "Failure in test assert_demo_failure (tests/assert_demo_failure.sql)",
        f"  {FAIL_MESSAGE}",
        "",
        "Done. PASS=38 WARN=0 ERROR=1 SKIP=0 NO-OP=0 TOTAL=39",
        f"Prefect flow run '{run.flow_run_name}' of flow 'shop': Failed",
        "Run report: Prefect artifact dbt-shop-build",
    ]
    assert "Traceback" not in run.stdout + run.stderr
    flow_run = flow_run_named(run.flow_run_name)
    assert state_of(flow_run) == ("FAILED", "Failed")
    artifacts = artifacts_of(flow_run.id)
    report = artifacts["dbt-shop-build"].data
    assert "**PASS=38 WARN=0 ERROR=1 SKIP=0 NO-OP=0 TOTAL=39**" in report
    assert (
        "## Failures (1)\n\n"
        "**test assert_demo_failure** · fail · `tests/assert_demo_failure.sql`\n\n"
        f"```text\n{FAIL_MESSAGE}\n```\n"
    ) in report
    assert "| fail | 1 |" in report
    rows = {row["node"]: row for row in json.loads(artifacts["dbt-shop-build-nodes"].data)}
    assert (rows["assert_demo_failure"]["status"], rows["assert_demo_failure"]["message"]) == ("fail", FAIL_MESSAGE)


def test_no_raise_lets_the_flow_complete_but_still_exits_1(tmp_path: Path) -> None:
    project = make_shop_copy(tmp_path)
    args = ["build", "--select", "+assert_demo_failure", "--indirect-selection", "empty", "--vars", "{fail_demo_test: true}"]
    run = dbt_prefect(project, *args, "--no-raise", "--no-assets")
    assert run.code == 1, run.stdout + run.stderr
    summary = summary_of(run.stdout)
    assert "Failure in test assert_demo_failure (tests/assert_demo_failure.sql)" in summary
    assert f"Prefect flow run '{run.flow_run_name}' of flow 'shop': Completed" in summary
    flow_run = flow_run_named(run.flow_run_name)
    assert state_of(flow_run) == ("COMPLETED", "Completed")
    assert flow_run.parameters == {"command": "build", "args": args}
    # --no-assets: no asset keys in the report either.
    rows = json.loads(artifacts_of(flow_run.id)["dbt-shop-build-nodes"].data)
    assert {row["asset_key"] for row in rows} == {None}
    assert sorted(f"{r['resource_type']} {r['node']}" for r in rows) == [
        "model orders",
        "model product_revenue",
        "model stg_orders",
        "model stg_payments",
        "model stg_products",
        "seed raw_orders",
        "seed raw_products",
        "test assert_demo_failure",
    ]


def test_usage_and_dbt_errors_exit_2(tmp_path: Path) -> None:
    project = make_shop_copy(tmp_path)
    attempted = ["--no-such-flag", "{oops", '"extra"', "bogus", str(tmp_path / "nowhere")]
    assert shop_flow_runs_mentioning(attempted) == []

    bad_flag = dbt_prefect(project, "build", "--no-such-flag")
    assert bad_flag.code == 2
    assert bad_flag.stderr.splitlines() == [
        "Usage: dbt-prefect build [DBT FLAGS] [OPTIONS]",
        "Error: dbt build: No such option '--no-such-flag'. See `dbt build --help`.",
    ]
    # The same check, in-process: dbt's own parser, before any flow run.
    assert dbt_usage_error(["source", "freshness", "--vars", "{oops"], "source freshness", project, project) == (
        "dbt source freshness: Invalid value for '--vars': String '{oops' is not valid YAML. "
        "See `dbt source freshness --help`."
    )
    assert dbt_usage_error(["run", "extra"], "run", project, project) == (
        "dbt run: Got unexpected extra argument (extra). See `dbt run --help`."
    )
    assert dbt_usage_error(["build", "-s", "orders+", "--vars", "{x: 1}", "--full-refresh"], "build", project, project) is None

    # The same command line, in-process through Typer's test runner.
    no_command = CliRunner().invoke(app, ["bogus"])
    assert no_command.exit_code == 2
    assert "No such command 'bogus'" in no_command.output
    missing = CliRunner().invoke(app, ["build", "--project-dir", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2
    assert missing.output.startswith(f"Error: dbt project directory {tmp_path / 'nowhere'} does not exist")
    # None of them got as far as a flow run.
    assert shop_flow_runs_mentioning(attempted) == []

    # An error dbt raises while it runs: exit 2, the flow run failed, dbt's message shown.
    (project / "models" / "marts" / "broken.sql").write_text("select {{ ref('orders' }}\n")
    broken = dbt_prefect(project, "build")
    assert broken.code == 2, broken.stdout + broken.stderr
    lines = broken.stdout.splitlines()
    error = next(line for line in lines if line.startswith("Error: "))
    assert error == "Error: dbt command 'build' failed: CompilationError: Compilation Error in model broken (models/marts/broken.sql)"
    assert "unexpected '}', expected ')'" in broken.stdout
    assert lines[-2:] == [
        f"Prefect flow run '{broken.flow_run_name}' of flow 'shop': Failed",
        "Run report: Prefect artifact dbt-shop-build",
    ]
    assert not any(line.startswith(("Finished dbt", "Done.")) for line in lines)
    flow_run = flow_run_named(broken.flow_run_name)
    assert state_of(flow_run) == ("FAILED", "Failed")
    report = artifacts_of(flow_run.id)["dbt-shop-build"]
    assert report.description == "`dbt build` in project shop: PASS=0 WARN=0 ERROR=0 SKIP=0 NO-OP=0 TOTAL=0, then dbt stopped with an error"
    assert "## dbt error" in report.data and "unexpected '}', expected ')'" in report.data
    assert "Traceback" not in broken.stdout + broken.stderr


def test_help_reads_like_dbt() -> None:
    top = subprocess.run([str(DBT_PREFECT), "--help"], env=cli_env(COLUMNS="100"), capture_output=True, text=True, timeout=60)
    assert top.returncode == 0
    assert "Usage: dbt-prefect [OPTIONS] COMMAND [ARGS]..." in top.stdout
    for command in ("build", "run", "test", "seed", "snapshot", "retry", "source", "docs"):
        assert re.search(rf"│ {command} +\S", top.stdout), command
    build = subprocess.run([str(DBT_PREFECT), "build", "--help"], env=cli_env(COLUMNS="100"), capture_output=True, text=True, timeout=60)
    assert build.returncode == 0
    assert "Usage: dbt-prefect build [DBT FLAGS] [OPTIONS]" in build.stdout
    for flag in ("--project-dir", "--profiles-dir", "--flow-run-name", "--tag", "--no-assets", "--include-compiled-code", "--no-raise"):
        assert flag in build.stdout, flag
    assert "DBT_PROJECT_DIR" in build.stdout and "DBT_PROFILES_DIR" in build.stdout
    assert "passed to dbt build unchanged" in build.stdout


def test_the_flow_run_link_follows_prefects_ui_url() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from dbt_prefect.cli.main import flow_run_url

    run_id = uuid.uuid4()
    # The session's server runs without the UI: no link.
    assert flow_run_url(run_id) is None
    # Prefect Cloud always serves its UI; the link is Prefect's own UI URL for the run.
    with temporary_settings({PREFECT_API_URL: "https://api.prefect.cloud/api/accounts/a1/workspaces/w1"}):
        assert flow_run_url(run_id) == f"https://app.prefect.cloud/account/a1/workspace/w1/runs/flow-run/{run_id}"


# -- dbt's own closing line ------------------------------------------------------------
EXPOSURE = """version: 2

exposures:
  - name: revenue_dashboard
    type: dashboard
    owner:
      name: Finance
      email: finance@example.com
    depends_on:
      - ref('orders')
      - ref('product_revenue')
"""


def every_status_project(destination: Path) -> Path:
    """The shop with a warning, an error (and so skips), a no-op exposure and its run hooks."""
    project = make_shop_copy(destination)
    (project / "tests" / "assert_warns.sql").write_text(
        "{{ config(severity='warn') }}\nselect order_id from {{ ref('orders') }} where order_id = 1\n"
    )
    (project / "models" / "marts" / "customers.sql").write_text("select no_such_column from {{ ref('stg_orders') }}\n")
    (project / "models" / "marts" / "_exposures.yml").write_text(EXPOSURE)
    return project


def dbts_done_line(project: Path) -> str:
    """What plain dbt prints at the end of the same build: the reference."""
    from dbt.cli.main import dbtRunner

    lines: list[str] = []

    def keep(event: Any) -> None:
        if event.info.name == "StatsLine":
            lines.append(event.info.msg)

    dbtRunner(callbacks=[keep]).invoke(
        ["build", "--project-dir", str(project), "--profiles-dir", str(project), "--log-level", "none"]
    )
    assert len(lines) == 1, lines
    return lines[0]


def test_the_done_line_is_dbts_own_for_every_status_and_the_run_hooks(tmp_path: Path) -> None:
    reference = dbts_done_line(every_status_project(tmp_path / "plain"))
    for bucket in ("PASS=", "WARN=1", "ERROR=1", "NO-OP=1"):
        assert bucket in reference, reference
    assert "SKIP=0" not in reference
    run = dbt_prefect(every_status_project(tmp_path / "prefect"), "build")
    assert run.code == 1, run.stdout + run.stderr
    done = [line for line in run.stdout.splitlines() if line.startswith("Done. ")]
    assert done == [reference]
    # The exposure ran with dbt's no-op status, as a task run with its upstream edges.
    runs = {r.name: r for r in task_runs(flow_run_named(run.flow_run_name).id)}
    exposure = runs["exposure revenue_dashboard"]
    assert state_of(exposure) == ("COMPLETED", "No-op")
    upstream = {i.id for i in exposure.task_inputs["wait_for"]}
    assert upstream == {runs["model orders"].id, runs["model product_revenue"].id}
