"""``dbt-prefect``: the dbt command line, with every command run inside a Prefect flow.

    dbt-prefect build --select orders+ --target prod
    dbt-prefect build --flow-run-name nightly --tag nightly --no-raise
    dbt-prefect source freshness

The command and every dbt flag are dbt's own; dbt-prefect adds a few flags of its own
(``--flow-run-name``, ``--tag``, ``--no-assets``, ``--include-compiled-code``,
``--no-raise``). While dbt runs, the terminal shows live progress; at the end, a summary
like dbt's. Exit codes are dbt's: 0 success, 1 node failures, 2 dbt or usage error.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional, Sequence

import typer

EXIT_SUCCESS, EXIT_FAILURES, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130

# dbt commands that run nodes (and run-operation), with a one-line description each.
_COMMANDS = {
    "build": "Seed, run, snapshot and test the selected nodes, in DAG order.",
    "run": "Run models.",
    "test": "Run data tests and unit tests.",
    "seed": "Load seed CSV files into the warehouse.",
    "snapshot": "Run snapshots.",
    "retry": "Rerun the nodes that failed or were skipped in the previous dbt command.",
    "compile": "Compile models, tests and analyses to SQL.",
    "clone": "Clone the selected nodes from another state, e.g. production.",
    "run-operation": "Run a macro.",
}
_GROUPS = {
    "source": ("Work with sources.", {"freshness": "Check the freshness of sources."}),
    "docs": ("Work with the documentation site.", {"generate": "Generate the documentation site."}),
}

_HELP = """\
dbt, run inside a Prefect flow.

`dbt-prefect build` runs `dbt build` in a Prefect flow named after the dbt project: every
dbt node becomes a Prefect task run, seeds, models and snapshots become Prefect assets, and
a run report is saved as a Prefect artifact. Every dbt flag works as it does with `dbt`.

Without PREFECT_API_URL, Prefect runs a temporary local server for the duration of the command.
"""

_EPILOG = """\
Examples:

  dbt-prefect build --select orders+ --target prod

  dbt-prefect build --flow-run-name nightly --tag nightly --no-raise

  dbt-prefect source freshness --project-dir integration_project

Exit codes are dbt's: 0 success, 1 a node failed, 2 dbt or usage error.
"""

_PANEL = "dbt-prefect options (every other flag is dbt's)"
_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": ["-h", "--help"]}


def _command_epilog(command: str) -> str:
    return (
        f"Every other flag is dbt's own and is passed to `dbt {command}` unchanged: "
        "--select, --exclude, --selector, --vars, --target, --full-refresh, --threads, "
        f"--fail-fast, …. See `dbt {command} --help`."
    )


# -- options -------------------------------------------------------------------------
@dataclass
class Options:
    project_dir: Optional[Path] = None
    profiles_dir: Optional[Path] = None
    flow_run_name: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    no_assets: bool = False
    include_compiled_code: bool = False
    no_raise: bool = False


def _make_command(dbt_command: tuple[str, ...]):
    def command(
        ctx: typer.Context,
        project_dir: Annotated[
            Optional[Path],
            typer.Option(
                "--project-dir",
                envvar="DBT_PROJECT_DIR",
                metavar="PATH",
                show_default=False,
                rich_help_panel=_PANEL,
                help="The dbt project directory. Default: the working directory.",
            ),
        ] = None,
        profiles_dir: Annotated[
            Optional[Path],
            typer.Option(
                "--profiles-dir",
                envvar="DBT_PROFILES_DIR",
                metavar="PATH",
                show_default=False,
                rich_help_panel=_PANEL,
                help="The directory of profiles.yml. Default: the working directory if it has one, else ~/.dbt.",
            ),
        ] = None,
        flow_run_name: Annotated[
            Optional[str],
            typer.Option(
                "--flow-run-name",
                metavar="NAME",
                rich_help_panel=_PANEL,
                help="The Prefect flow run's name; may use {command}. Default: a generated name.",
            ),
        ] = None,
        tag: Annotated[
            Optional[list[str]],
            typer.Option("--tag", metavar="TAG", rich_help_panel=_PANEL, help="A tag for the flow run and its task runs; repeatable."),
        ] = None,
        no_assets: Annotated[
            bool,
            typer.Option("--no-assets", rich_help_panel=_PANEL, help="Do not record seeds, models and snapshots as Prefect assets."),
        ] = False,
        include_compiled_code: Annotated[
            bool,
            typer.Option(
                "--include-compiled-code", rich_help_panel=_PANEL, help="Add each model's compiled SQL to its asset's description."
            ),
        ] = False,
        no_raise: Annotated[
            bool,
            typer.Option(
                "--no-raise",
                rich_help_panel=_PANEL,
                help="Let the flow run complete when nodes fail. The exit code is still 1.",
            ),
        ] = False,
    ) -> None:
        options = Options(
            project_dir=project_dir,
            profiles_dir=profiles_dir,
            flow_run_name=flow_run_name,
            tags=list(tag or []),
            no_assets=no_assets,
            include_compiled_code=include_compiled_code,
            no_raise=no_raise,
        )
        raise typer.Exit(run_command([*dbt_command, *ctx.args], options, ctx))

    return command


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"dbt-prefect {version('dbt-prefect')} (dbt-core {version('dbt-core')}, prefect {version('prefect')})")
        raise typer.Exit()


app = typer.Typer(
    name="dbt-prefect",
    help=_HELP,
    epilog=_EPILOG,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the versions and exit.")
    ] = False,
) -> None:
    pass


def _register(target: typer.Typer, names: tuple[str, ...], help_text: str) -> None:
    target.command(
        names[-1],
        help=help_text,
        epilog=_command_epilog(" ".join(names)),
        context_settings=_PASS_THROUGH,
        options_metavar="[DBT FLAGS] [OPTIONS]",
    )(_make_command(names))


for _name, _help in _COMMANDS.items():
    _register(app, (_name,), _help)
for _group, (_group_help, _subcommands) in _GROUPS.items():
    _sub = typer.Typer(name=_group, help=_group_help, no_args_is_help=True, rich_markup_mode="markdown")
    for _name, _help in _subcommands.items():
        _register(_sub, (_group, _name), _help)
    app.add_typer(_sub, name=_group)


def main() -> None:
    app()


# -- running a command ---------------------------------------------------------------
@dataclass
class _Outcome:
    flow_run: Any = None
    runner: Any = None
    result: Any = None
    error: Optional[BaseException] = None  # raised by invoke()
    engine_error: Optional[BaseException] = None  # raised by Prefect around the flow
    state: Any = None
    started: Optional[float] = None  # when dbt started, inside the flow run


def run_command(args: Sequence[str], options: Options, ctx: Optional[typer.Context] = None) -> int:
    """Run ``dbt <args>`` in a Prefect flow with live progress; return the exit code."""
    # Prefect first: it sets up console logging only if nothing else has (importing dbt
    # adds a plain stderr handler to the root logger).
    from prefect import tags

    from dbt_prefect.args import parse_invocation
    from dbt_prefect.errors import DbtPrefectError
    from dbt_prefect.report import project_name
    from dbt_prefect.runner import _check_project
    from dbt_prefect.settings import PrefectDbtSettings

    given = {k: v for k, v in (("project_dir", options.project_dir), ("profiles_dir", options.profiles_dir)) if v}
    try:
        settings = PrefectDbtSettings(**given)
        _check_project(settings.project_dir)
        invocation = parse_invocation(list(args))
    except DbtPrefectError as exc:
        _print_error(str(exc))
        return EXIT_ERROR
    except Exception as exc:  # e.g. an invalid DBT_* variable
        _print_error(f"{type(exc).__name__}: {exc}")
        return EXIT_ERROR
    usage = _dbt_usage_error(args, invocation.command, settings.project_dir, settings.profiles_dir)
    if usage is not None:
        if ctx is not None:
            print(ctx.get_usage(), file=sys.stderr)
        _print_error(usage)
        return EXIT_ERROR

    project = project_name(settings.project_dir)
    display = ProgressDisplay(invocation.command, project, live=_live_terminal())
    outcome = _Outcome()
    dbt_flow = _make_flow(project, settings, options, display, outcome)
    with display, _console_logs_to(display):
        try:
            with tags(*options.tags):
                outcome.state = dbt_flow(invocation.command, list(args), return_state=True)
        except (KeyboardInterrupt, Exception) as exc:  # reported in the summary
            outcome.engine_error = exc
        code = exit_code(outcome)
        display.succeeded = code == EXIT_SUCCESS
    elapsed = time.monotonic() - outcome.started if outcome.started is not None else 0.0
    _print_summary(display, outcome, invocation.command, project, elapsed, code)
    # The flow run's context, copied into background threads, keeps the flow and so this
    # outcome alive until exit; dbt's result must not outlive the command (DuckDB reports
    # objects still alive at interpreter exit as leaks).
    for error in (outcome.error, outcome.engine_error):
        if error is not None:
            error.__traceback__ = None
            if hasattr(error, "result"):
                error.result = None
    outcome.result = outcome.runner = outcome.error = outcome.engine_error = outcome.state = None
    return code


def _make_flow(project: str, settings: Any, options: Options, display: "ProgressDisplay", outcome: _Outcome) -> Any:
    from prefect import flow
    from prefect.context import FlowRunContext

    from dbt_prefect.runner import PrefectDbtRunner

    def dbt(command: str, args: list[str]) -> None:
        flow_run = FlowRunContext.get().flow_run
        outcome.flow_run = flow_run
        display.flow_started(flow_run.name)
        runner = PrefectDbtRunner(
            settings=settings,
            raise_on_failure=not options.no_raise,
            include_compiled_code=options.include_compiled_code,
            disable_assets=options.no_assets,
        )
        outcome.runner = runner
        outcome.started = time.monotonic()
        try:
            outcome.result = runner.invoke(args, callbacks=[display.callback])
        except BaseException as exc:
            outcome.error = exc
            raise

    return flow(
        dbt,
        name=project,
        flow_run_name=options.flow_run_name,
        description=f"dbt commands of the dbt project {project}, run by dbt-prefect",
        persist_result=False,
        validate_parameters=False,
    )


def exit_code(outcome: _Outcome) -> int:
    """dbt's exit codes: 0 success, 1 node failures, 2 dbt or usage error."""
    from dbt_prefect.errors import PrefectDbtRunnerFailure

    error = outcome.error or outcome.engine_error
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, PrefectDbtRunnerFailure):
        return EXIT_FAILURES
    if error is not None or outcome.result is None:
        return EXIT_ERROR
    return EXIT_SUCCESS if getattr(outcome.result, "success", False) else EXIT_FAILURES


def _dbt_usage_error(args: Sequence[str], command: str, project_dir: Path, profiles_dir: Path) -> Optional[str]:
    """dbt's own complaint about the flags (unknown flag, bad value), before any flow run exists."""
    import click
    from dbt.cli.main import cli

    full = list(args) + ["--project-dir", str(project_dir)]
    if Path(profiles_dir).is_dir():
        full += ["--profiles-dir", str(profiles_dir)]
    try:
        # Nothing here is meant for the terminal; dbt's complaint is in the exception.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            ctx = cli.make_context("dbt", full)
            rest = list(getattr(ctx, "_protected_args", [])) + list(ctx.args)
            group: Any = cli
            while isinstance(group, click.Group) and rest:
                name, group, rest = group.resolve_command(ctx, rest)
                ctx = group.make_context(name, list(rest), parent=ctx)
                rest = list(getattr(ctx, "_protected_args", [])) + list(ctx.args)
    except click.UsageError as exc:
        if isinstance(exc, click.BadParameter) and exc.param is not None and exc.param.name in ("project_dir", "profiles_dir"):
            return None  # the runner reports these, with the fix
        message = exc.format_message().strip()
        if not message.endswith((".", "!", "?")):
            message += "."
        return f"dbt {command}: {message} See `dbt {command} --help`."
    except Exception:
        return None  # anything else is for dbt itself to report
    return None


def _live_terminal() -> bool:
    """Live progress on an interactive terminal; plain lines in CI, in pipes and on dumb terminals."""
    ci = os.environ.get("CI", "").strip().lower()
    if ci not in ("", "0", "false", "no"):
        return False
    if os.environ.get("TERM", "") == "dumb":
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def _console_logs_to(display: "ProgressDisplay") -> Iterator[None]:
    """Prefect's console handler would print every dbt line under the progress display.

    While the command runs, those lines only go to the Prefect API (the flow run's logs)
    and to logs/dbt.log; warnings from Prefect and dbt-prefect themselves are printed
    through the display.
    """
    root = logging.getLogger()
    terminal = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    consoles = [
        h for h in root.handlers if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in terminal
    ]
    for handler in consoles:
        root.removeHandler(handler)
    handler = _DisplayLogHandler(display)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for console in consoles:
            root.addHandler(console)


class _DisplayLogHandler(logging.Handler):
    _RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")

    def __init__(self, display: "ProgressDisplay") -> None:
        super().__init__(logging.WARNING)
        self._display = display

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(self._RUN_LOGGERS):
            return  # dbt's own lines and the flow engine's messages: in the flow run's logs
        try:
            self._display.line(f"{record.levelname}: {record.getMessage()}")
        except Exception:
            pass


# -- progress ------------------------------------------------------------------------
_NODE_START, _NODE_FINISHED = "NodeStart", "NodeFinished"
# dbt events that carry the number of nodes the command will run ("12 of 36 ...").
# LogHookStartLine/LogHookEndLine carry a count of hooks instead and are left out.
_TOTAL_EVENTS = frozenset(
    {
        "LogStartLine",
        "SkippingDetails",
        "LogSkipBecauseError",
        "LogNodeResult",
        "LogModelResult",
        "LogSnapshotResult",
        "LogSeedResult",
        "LogFreshnessResult",
        "LogNodeNoOpResult",
        "LogFunctionResult",
    }
)
_STOP = object()
_STYLES = {"pass": "green", "warn": "yellow", "error": "red", "skip": "bright_black"}
_MAX_RUNNING_SHOWN = 3


class ProgressDisplay:
    """Counts dbt's nodes as they start and finish, and shows it live or as plain lines.

    ``callback`` is handed to ``invoke(callbacks=[...])``; dbt calls it from its worker
    threads for every event, so it only queues the few events that matter. One thread
    turns them into counts and lines; in live mode, rich redraws the display from the
    counts several times a second.
    """

    def __init__(self, command: str, project: str, live: bool) -> None:
        self.command = command
        self.project = project
        self.live = live
        self.flow_run_name: Optional[str] = None
        self.total: Optional[int] = None
        self.done = 0
        self.counts = {"pass": 0, "warn": 0, "error": 0, "skip": 0}
        self.running: dict[str, str] = {}
        self._lock = threading.Lock()
        self._queue: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._started = time.monotonic()
        self._finished = False
        self.succeeded = False  # set before the display stops: ✓ or ✗ on the last frame
        self._live: Any = None
        self.console: Any = None
        self._spinner: Any = None

    # -- called from dbt's threads -----------------------------------------------
    def callback(self, msg: Any) -> None:
        try:
            name = msg.info.name
            if name == _NODE_START or name == _NODE_FINISHED or name in _TOTAL_EVENTS:
                self._queue.put(msg)
        except Exception:
            pass

    def line(self, text: str) -> None:
        """Print a line above the display (or as a plain line)."""
        self._queue.put(text)

    def flow_started(self, flow_run_name: str) -> None:
        with self._lock:
            self.flow_run_name = flow_run_name
        self.line(f"Running dbt {self.command} of project {self.project} in Prefect flow run '{flow_run_name}'")

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> "ProgressDisplay":
        from rich.console import Console

        self._started = time.monotonic()
        if self.live:
            from rich.live import Live
            from rich.spinner import Spinner

            self.console = Console(file=sys.stdout, highlight=False)
            self._spinner = Spinner("dots", style="cyan")
            self._live = Live(
                get_renderable=self._render,
                console=self.console,
                refresh_per_second=10,
                transient=False,
                redirect_stdout=True,
                redirect_stderr=True,
            )
            self._live.start()
        else:
            self.console = Console(file=sys.stdout, highlight=False, color_system=None, soft_wrap=True)
        self._thread = threading.Thread(target=self._consume, name="dbt-prefect-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            self._finished = True
            self.running.clear()
        if self._live is not None:
            self._live.refresh()
            self._live.stop()

    # -- the consumer thread ---------------------------------------------------------
    def _consume(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                if isinstance(item, str):
                    self._print(item)
                else:
                    self._event(item)
            except Exception:
                pass  # the display must never disturb the run

    def _print(self, text: str, style: Optional[str] = None) -> None:
        if self.live:
            from rich.text import Text

            self._live.console.print(Text(text, style=style or ""))
        else:
            print(text, flush=True)

    def _event(self, msg: Any) -> None:
        from dbt_prefect.report import status_category, status_label

        name = msg.info.name
        data = msg.data
        if name in _TOTAL_EVENTS:
            total = int(getattr(data, "total", 0) or 0)
            if total > 0:
                with self._lock:
                    self.total = total
            return
        node_info = data.node_info
        if node_info.materialized == "ephemeral":
            return  # ephemeral models are compiled into their children, never run
        label = f"{node_info.resource_type} {node_info.node_name}"
        if name == _NODE_START:
            with self._lock:
                self.running[node_info.unique_id] = label
            return
        result = data.run_result
        status = result.status
        category = status_category(status)
        with self._lock:
            self.running.pop(node_info.unique_id, None)
            self.done += 1
            self.counts[category] += 1
            done, total = self.done, self.total
        if self.live and category not in ("error", "warn"):
            return
        width = len(str(total)) if total else 1
        position = f"{done:>{width}}/{total if total else '?'}"
        timing = "" if status == "skipped" else f" [{result.execution_time:.2f}s]"
        self._print(f"{position} {status_label(status):<5} {label}{timing}", _STYLES.get(category))

    # -- live rendering (rich's refresh thread) --------------------------------------
    def _render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            total, done, finished = self.total, self.done, self._finished
            counts = dict(self.counts)
            running = list(self.running.values())
            flow_run_name = self.flow_run_name
        elapsed = int(time.monotonic() - self._started)
        title = Text()
        if finished:
            title.append("✓ " if self.succeeded else "✗ ", style="green" if self.succeeded else "red")
        title.append(f"dbt {self.command}", style="bold")
        title.append(f" · {self.project}")
        title.append(f" · flow run '{flow_run_name}'" if flow_run_name else " · starting Prefect flow run")
        header = Table.grid(padding=(0, 1))
        if finished:
            header.add_row(title)
        else:
            header.add_row(self._spinner, title)
        bar = Table.grid(padding=(0, 2))
        shown_total = max(total or 0, done) or None
        bar.add_row(
            ProgressBar(total=float(shown_total) if shown_total else None, completed=done, width=40, pulse=shown_total is None and not finished),
            Text(f"{done}/{shown_total if shown_total else '?'} nodes"),
            Text(f"{elapsed // 60}:{elapsed % 60:02d}", style="cyan"),
        )
        tally = Text()
        for i, category in enumerate(("pass", "warn", "error", "skip")):
            if i:
                tally.append(" · ")
            tally.append(f"{category} {counts[category]}", style=_STYLES[category] if counts[category] else "")
        parts: list[Any] = [header, bar, tally]
        if not finished:
            if running:
                more = len(running) - _MAX_RUNNING_SHOWN
                text = "running: " + ", ".join(running[:_MAX_RUNNING_SHOWN]) + (f" (+{more} more)" if more > 0 else "")
            else:
                text = "running: dbt is parsing the project" if done == 0 else "running: -"
            parts.append(Text(text, no_wrap=True, overflow="ellipsis", style="bright_black"))
        return Group(*parts)


# -- the end -------------------------------------------------------------------------
def _report_of(outcome: _Outcome, command: str, project: str) -> Any:
    runner = outcome.runner
    recorder = getattr(runner, "last_recorder", None)
    if recorder is None:
        return None
    report = getattr(runner, "last_report", None)
    if report is not None:
        return report
    from dbt_prefect.report import build_report

    return build_report(
        recorder.finished,
        project=project,
        command=command,
        adapter_type=recorder.catalog.adapter_type,
        with_asset_keys=not runner.disable_assets,
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


_HEADINGS = {"fail": "Failure in", "warn": "Warning in", "partial success": "Partial success in"}


def summary_lines(report: Any, outcome: _Outcome, project: str, code: int, elapsed: float) -> list[tuple[str, str]]:
    """The closing summary, like dbt's, as (text, style) lines."""
    from dbt_prefect.report import NO_REPORT_COMMANDS

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
            lines += [("", ""), (f"Completed with {_plural(len(failures), 'error')} and {_plural(len(warnings), 'warning')}:", "red")]
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
            lines.append((f"{heading} {node.display_name}{where}", "red" if node in failures else "yellow"))
            for text in (node.message or f"dbt status: {node.status}").splitlines():
                lines.append((f"  {text}", ""))
        if counted:
            lines += [("", ""), (f"Done. {report.stats_line}", "")]
    if dbt_error:
        if isinstance(error, KeyboardInterrupt):
            lines.append(("Interrupted.", "red"))
        else:
            lines.append((f"Error: {_error_text(error)}", "red"))
    flow_run = outcome.flow_run
    if flow_run is not None:
        state = outcome.state
        state_name = getattr(state, "name", None) or ("Crashed" if error is not None else "unknown")
        lines.append((f"Prefect flow run '{flow_run.name}' of flow '{project}': {state_name}", ""))
        published = getattr(outcome.runner, "last_report", None)
        if published is not None:
            lines.append((f"Run report: Prefect artifact {published.key}", ""))
        url = flow_run_url(flow_run.id)
        if url:
            lines.append((f"View it in Prefect: {url}", "cyan"))
    return lines


def _is_node_failure(error: BaseException) -> bool:
    from dbt_prefect.errors import PrefectDbtRunnerFailure

    return isinstance(error, PrefectDbtRunnerFailure)


def _error_text(error: BaseException) -> str:
    from dbt_prefect.errors import DbtPrefectError

    if isinstance(error, DbtPrefectError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _print_summary(display: ProgressDisplay, outcome: _Outcome, command: str, project: str, elapsed: float, code: int) -> None:
    report = _report_of(outcome, command, project)
    lines = summary_lines(report, outcome, project, code, elapsed)
    if display.live:
        from rich.text import Text

        for text, style in lines:
            display.console.print(Text(text, style=style))
    else:
        print("\n".join(text for text, _ in lines), flush=True)


def _print_error(message: str) -> None:
    print(f"Error: {message}", file=sys.stderr, flush=True)


def flow_run_url(flow_run_id: Any) -> Optional[str]:
    """The flow run's page in the Prefect UI, when the configured server serves one."""
    try:
        from prefect.settings import get_current_settings

        settings = get_current_settings()
        ui_url, api_url = settings.ui_url, settings.api.url
        if not ui_url or not api_url:
            return None  # ephemeral mode: the temporary server is gone with this process
        ui_url = ui_url.rstrip("/")
        url = f"{ui_url}/runs/flow-run/{flow_run_id}"
        if api_url.startswith(settings.cloud.api_url):
            return url
        import httpx

        # A self-hosted server started with PREFECT_SERVER_UI_ENABLED=false has no UI.
        response = httpx.get(f"{ui_url}/ui-settings", timeout=2.0)
        if response.status_code != 200:
            return None
        # A server without the UI's static files serves ui-settings with no UI available.
        available = response.json().get("available_uis")
        return url if available is None or available else None
    except Exception:
        return None


if __name__ == "__main__":
    main()
