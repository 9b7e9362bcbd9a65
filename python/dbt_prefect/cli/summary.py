"""The end of a ``dbt-prefect`` command: its exit code and a closing summary like dbt's."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text

from dbt_prefect.cli.progress import ProgressDisplay
from dbt_prefect.errors import DbtPrefectError, PrefectDbtRunnerFailure
from dbt_prefect.model.statuses import FAIL, PARTIAL_SUCCESS, WARN
from dbt_prefect.runner.failures import result_statuses
from dbt_prefect.runner.report import NO_REPORT_COMMANDS, RunReport, UiPages, build_report, ui_pages

if TYPE_CHECKING:  # the runner imports dbt; `dbt-prefect --help` does not need it
    from dbt_prefect.runner.runner import PrefectDbtRunner

EXIT_SUCCESS, EXIT_FAILURES, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass
class CommandOutcome:
    """What happened while one command ran, for the exit code and the summary."""

    flow_run: Any = None
    runner: PrefectDbtRunner | None = None
    result: Any = None
    error: BaseException | None = None  # raised by invoke()
    engine_error: BaseException | None = None  # raised by Prefect around the flow
    state: Any = None
    started: float | None = None  # when dbt started, inside the flow run


def exit_code(outcome: CommandOutcome) -> int:
    """dbt's exit codes: 0 success, 1 node failures, 2 dbt or usage error."""
    error = outcome.error or outcome.engine_error
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, PrefectDbtRunnerFailure):
        return EXIT_FAILURES
    if error is not None or outcome.result is None:
        return EXIT_ERROR
    return EXIT_SUCCESS if getattr(outcome.result, "success", False) else EXIT_FAILURES


def report_of(outcome: CommandOutcome, command: str, project: str) -> RunReport | None:
    runner = outcome.runner
    if runner is None or runner.last_recorder is None:
        return None
    recorder = runner.last_recorder
    report = runner.last_report
    if report is not None:
        return report
    return build_report(
        recorder.finished,
        project=project,
        command=command,
        with_asset_keys=not runner.disable_assets,
        dbt_statuses=result_statuses(outcome.result),
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


_HEADINGS = {FAIL: "Failure in", WARN: "Warning in", PARTIAL_SUCCESS: "Partial success in"}


def summary_lines(
    report: Any, outcome: CommandOutcome, project: str, code: int, elapsed: float
) -> list[tuple[str, str]]:
    """The closing summary, like dbt's, as (text, style) lines."""
    lines: list[tuple[str, str]] = [("", "")]
    error = outcome.error or outcome.engine_error
    dbt_error = error is not None and not _is_node_failure(error)
    if report is not None and (report.nodes or not dbt_error):
        failures, warnings = report.failures, report.warnings
        counted = bool(report.nodes) or report.command not in NO_REPORT_COMMANDS  # run-operation runs no node
        nodes = f" {_plural(len(report.nodes), 'node')}" if counted else ""
        if dbt_error:
            lines.append((f"Stopped dbt {report.command} after{nodes} in {elapsed:.1f}s.", ""))
        else:
            lines.append((f"Finished dbt {report.command}{' of' + nodes if nodes else ''} in {elapsed:.1f}s.", ""))
        if failures:
            lines += [
                ("", ""),
                (f"Completed with {_plural(len(failures), 'error')} and {_plural(len(warnings), 'warning')}:", "red"),
            ]
        elif warnings:
            lines += [("", ""), (f"Completed with {_plural(len(warnings), 'warning')}:", "yellow")]
        elif code == EXIT_SUCCESS:
            lines += [("", ""), ("Completed successfully", "green")]
        elif error is not None and not dbt_error:
            # Failures dbt reports without a node, e.g. a failing run-operation.
            lines += [("", ""), *((text, "red") for text in str(error).splitlines())]
        for node in failures + warnings:
            heading = _HEADINGS.get(node.status, "Error in")
            where = f" ({node.path})" if node.path else ""
            lines.append(("", ""))
            lines.append((f"{heading} {node.task_run_name}{where}", "red" if node in failures else "yellow"))
            for text in (node.message or f"dbt status: {node.status}").splitlines():
                lines.append((f"  {text}", ""))
        if counted:
            lines += [("", ""), (f"Done. {report.stats_line}", "")]
    if error is not None and dbt_error:
        if isinstance(error, KeyboardInterrupt):
            lines.append(("Interrupted.", "red"))
        else:
            lines.append((f"Error: {_error_text(error)}", "red"))
    flow_run = outcome.flow_run
    if flow_run is not None:
        state = outcome.state
        state_name = getattr(state, "name", None) or ("Crashed" if error is not None else "unknown")
        lines.append((f"Prefect flow run '{flow_run.name}' of flow '{project}': {state_name}", ""))
        published = outcome.runner.last_report if outcome.runner is not None else None
        if published is not None:
            lines.append((f"Run report: Prefect artifact {published.key}", ""))
        pages = _served_pages()
        if pages is not None:
            lines.append((f"View it in Prefect: {pages.flow_run(flow_run.id)}", "cyan"))
            if published is not None and published.artifact_id is not None:
                lines.append(
                    (f"Its run report, with the lineage picture: {pages.artifact(published.artifact_id)}", "cyan")
                )
    return lines


def _is_node_failure(error: BaseException) -> bool:
    return isinstance(error, PrefectDbtRunnerFailure)


def _error_text(error: BaseException) -> str:
    if isinstance(error, DbtPrefectError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def print_summary(
    display: ProgressDisplay, outcome: CommandOutcome, command: str, project: str, elapsed: float, code: int
) -> None:
    report = report_of(outcome, command, project)
    lines = summary_lines(report, outcome, project, code, elapsed)
    if display.live:
        for text, style in lines:
            display.console.print(Text(text, style=style))
    else:
        print("\n".join(text for text, _ in lines), flush=True)


def print_error(message: str) -> None:
    print(f"Error: {message}", file=sys.stderr, flush=True)


def _served_pages() -> UiPages | None:
    """The pages of the UI this server's users get by default, when it says it serves one."""
    try:
        pages = ui_pages()
    except Exception:
        return None
    return pages if pages is not None and pages.served else None


def flow_run_url(flow_run_id: Any) -> str | None:
    """The flow run's page in the UI this server's users get by default (V2's, unless
    turned off); None when the server serves no UI (ephemeral mode, or started
    with PREFECT_SERVER_UI_ENABLED=false)."""
    pages = _served_pages()
    return pages.flow_run(flow_run_id) if pages is not None else None
