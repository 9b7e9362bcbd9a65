"""``dbt-prefect``: the dbt command line, with every command run inside a Prefect flow.

    dbt-prefect build --select orders+ --target prod
    dbt-prefect build --flow-run-name nightly --tag nightly --no-raise
    dbt-prefect source freshness

The command and every dbt flag are dbt's own; dbt-prefect adds a few flags of its own
(``--flow-run-name``, ``--tag``, ``--no-assets``, ``--include-compiled-code``,
``--no-raise``, ``--only-changed``, ``--state-store``). While dbt runs, the terminal shows live progress; at the end, a summary
like dbt's. Exit codes are dbt's: 0 success, 1 node failures, 2 dbt or usage error.

Prefect, dbt and the runner are imported when a command runs, not at import: `--help`
stays instant, and Prefect is imported before dbt (Prefect sets up console logging only
if nothing else has, and importing dbt adds a plain stderr handler to the root logger).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from dbt_prefect.cli import scaffold, serve
from dbt_prefect.cli.progress import ProgressDisplay, console_logs_to, live_terminal
from dbt_prefect.cli.summary import (
    EXIT_ERROR,
    EXIT_SUCCESS,
    CommandOutcome,
    exit_code,
    flow_run_url,
    print_error,
    print_summary,
)
from dbt_prefect.cli.usage import dbt_usage_error

__all__ = ["app", "main", "run_command", "dbt_usage_error", "flow_run_url"]

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

Without PREFECT_API_URL, the command starts a temporary local Prefect server for its duration.
"""

_EPILOG = """\
Examples:

  dbt-prefect build --select orders+ --target prod

  dbt-prefect build --flow-run-name nightly --tag nightly --no-raise

  dbt-prefect build --only-changed --state-store .dbt-state

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
    project_dir: Path | None = None
    profiles_dir: Path | None = None
    flow_run_name: str | None = None
    tags: list[str] = field(default_factory=list)
    no_assets: bool = False
    include_compiled_code: bool = False
    no_raise: bool = False
    only_changed: bool = False
    state_store: str | None = None


def _make_command(dbt_command: tuple[str, ...]):
    def command(
        ctx: typer.Context,
        project_dir: Annotated[
            Path | None,
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
            Path | None,
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
            str | None,
            typer.Option(
                "--flow-run-name",
                metavar="NAME",
                rich_help_panel=_PANEL,
                help="The Prefect flow run's name; may use {command}. Default: a generated name.",
            ),
        ] = None,
        tag: Annotated[
            list[str] | None,
            typer.Option(
                "--tag",
                metavar="TAG",
                rich_help_panel=_PANEL,
                help="A tag for the flow run and its task runs; repeatable.",
            ),
        ] = None,
        no_assets: Annotated[
            bool,
            typer.Option(
                "--no-assets",
                rich_help_panel=_PANEL,
                help="Do not record seeds, models and snapshots as Prefect assets.",
            ),
        ] = False,
        include_compiled_code: Annotated[
            bool,
            typer.Option(
                "--include-compiled-code",
                rich_help_panel=_PANEL,
                help="Add each model's compiled SQL to its asset's description.",
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
        only_changed: Annotated[
            bool,
            typer.Option(
                "--only-changed",
                rich_help_panel=_PANEL,
                help="Build only what changed since the state in --state-store: modified, failed "
                "or skipped last time, or below a source with new rows (build only).",
            ),
        ] = False,
        state_store: Annotated[
            str | None,
            typer.Option(
                "--state-store",
                envvar="DBT_PREFECT_STATE_STORE",
                metavar="PATH",
                show_default=False,
                rich_help_panel=_PANEL,
                help="Where --only-changed keeps the last build's artifacts: a directory, "
                "or a Prefect block slug such as local-file-system/dbt-state.",
            ),
        ] = None,
    ) -> None:
        options = Options(
            project_dir=project_dir,
            profiles_dir=profiles_dir,
            flow_run_name=flow_run_name,
            tags=list(tag or []),
            no_assets=no_assets,
            include_compiled_code=include_compiled_code,
            no_raise=no_raise,
            only_changed=only_changed,
            state_store=state_store,
        )
        raise typer.Exit(run_command([*dbt_command, *ctx.args], options, ctx))

    return command


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(
            f"dbt-prefect {version('dbt-prefect')} (dbt-core {version('dbt-core')}, prefect {version('prefect')})"
        )
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
# Deployments: `dbt-prefect init` (cli/scaffold.py) and `dbt-prefect serve` (cli/serve.py).
scaffold.register(app)
serve.register(app)


def main() -> None:
    app()


# -- running a command ---------------------------------------------------------------
def run_command(args: Sequence[str], options: Options, ctx: typer.Context | None = None) -> int:
    """Run ``dbt <args>`` in a Prefect flow with live progress; return the exit code."""
    # Prefect first: it sets up console logging only if nothing else has (importing dbt
    # adds a plain stderr handler to the root logger).
    from prefect import tags

    from dbt_prefect.cli.server import use_temporary_server_if_needed
    from dbt_prefect.errors import DbtPrefectError
    from dbt_prefect.runner.args import parse_invocation
    from dbt_prefect.runner.changed import check_request
    from dbt_prefect.runner.invocation import check_project
    from dbt_prefect.runner.report import project_name
    from dbt_prefect.settings import PrefectDbtSettings

    given: dict[str, Any] = {
        k: v for k, v in (("project_dir", options.project_dir), ("profiles_dir", options.profiles_dir)) if v
    }
    try:
        settings = PrefectDbtSettings(**given)
        check_project(settings.project_dir)
        invocation = parse_invocation(list(args))
        if options.only_changed:
            check_request(invocation, {}, options.state_store)
    except DbtPrefectError as exc:
        print_error(str(exc))
        return EXIT_ERROR
    except Exception as exc:  # e.g. an invalid DBT_* variable
        print_error(f"{type(exc).__name__}: {exc}")
        return EXIT_ERROR
    usage = dbt_usage_error(args, invocation.command, settings.project_dir, settings.profiles_dir)
    if usage is not None:
        if ctx is not None:
            print(ctx.get_usage(), file=sys.stderr)
        print_error(usage)
        return EXIT_ERROR
    try:
        use_temporary_server_if_needed()
    except DbtPrefectError as exc:
        print_error(str(exc))
        return EXIT_ERROR

    project = project_name(settings.project_dir)
    display = ProgressDisplay(invocation.command, project, live=live_terminal())
    outcome = CommandOutcome()
    dbt_flow = _make_flow(project, settings, options, display, outcome)
    with display, console_logs_to(display):
        try:
            with tags(*options.tags):
                outcome.state = dbt_flow(invocation.command, list(args), return_state=True)
        except (KeyboardInterrupt, Exception) as exc:  # reported in the summary
            outcome.engine_error = exc
        code = exit_code(outcome)
        display.succeeded = code == EXIT_SUCCESS
    elapsed = time.monotonic() - outcome.started if outcome.started is not None else 0.0
    print_summary(display, outcome, invocation.command, project, elapsed, code)
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


def _make_flow(project: str, settings: Any, options: Options, display: ProgressDisplay, outcome: CommandOutcome) -> Any:
    from prefect import flow
    from prefect.context import FlowRunContext

    from dbt_prefect.runner.runner import PrefectDbtRunner

    def dbt(command: str, args: list[str]) -> None:
        context = FlowRunContext.get()
        assert context is not None and context.flow_run is not None, "runs as a flow"
        flow_run = context.flow_run
        outcome.flow_run = flow_run
        display.flow_started(flow_run.name)
        runner = PrefectDbtRunner(
            settings=settings,
            raise_on_failure=not options.no_raise,
            include_compiled_code=options.include_compiled_code,
            disable_assets=options.no_assets,
            state_store=options.state_store,
        )
        outcome.runner = runner
        outcome.started = time.monotonic()
        extra = {"only_changed": True} if options.only_changed else {}
        try:
            outcome.result = runner.invoke(args, callbacks=[display.callback], **extra)
        except BaseException as exc:
            outcome.error = exc
            raise

    # Prefect's overloads of flow() type the decorator forms only; this is its direct call.
    return flow(  # type: ignore[call-overload]
        dbt,
        name=project,
        flow_run_name=options.flow_run_name,
        description=f"dbt commands of the dbt project {project}, run by dbt-prefect",
        persist_result=False,
        validate_parameters=False,
    )


if __name__ == "__main__":
    main()
