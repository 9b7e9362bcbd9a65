"""``dbt-prefect serve``: `dbt build` as a scheduled Prefect deployment, served from this
process (``flow.serve``): no work pool, no worker, no infrastructure.

The flow is the one ``dbt-prefect init`` writes (``templates/flow.py``), named after the
dbt project. The dbt flags given to ``serve`` become the deployment's parameters: select,
exclude, full_refresh, target and vars as themselves, every other flag in ``dbt_args``; a
custom run from the UI may change any of them. Each scheduled run executes in a child
process, as Prefect's runner does. Ctrl-C (or SIGTERM) stops serving: the runner pauses
the schedule and stops. A cancelled run stops dbt's queries, as the runner does.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from dbt_prefect.cli.options import ProjectDirOption, TimezoneOption
from dbt_prefect.cli.schedules import InvalidSchedule, check_cron
from dbt_prefect.errors import DbtArgumentsError, DbtPrefectError

EXIT_ERROR = 2

# dbt flags that are parameters of the flow; the values of the multi-valued ones run to
# the next flag, as in dbt.
_PARAMETER_FLAGS = {
    "--select": "select",
    "-s": "select",
    "--models": "select",
    "-m": "select",
    "--exclude": "exclude",
    "--target": "target",
    "-t": "target",
    "--vars": "vars",
}
_MULTI_VALUED = {"select", "exclude"}


class ServeNeedsServer(DbtPrefectError):
    """``serve`` was started with no Prefect server to keep its schedule."""


def flow_parameters(dbt_args: Sequence[str]) -> dict[str, Any]:
    """The flow's parameters for ``dbt build <dbt_args>``; DbtArgumentsError for bad --vars."""
    import yaml

    parameters: dict[str, Any] = {}
    rest: list[str] = []
    args = list(dbt_args)
    i = 0
    while i < len(args):
        flag, equals, inline = args[i].partition("=")
        name = _PARAMETER_FLAGS.get(flag) if flag.startswith("-") else None
        i += 1
        if flag == "--full-refresh" and not equals:
            parameters["full_refresh"] = True
            continue
        if name is None:
            rest.append(args[i - 1])
            continue
        values = [inline] if equals else []
        while i < len(args) and not args[i].startswith("-") and (not values or name in _MULTI_VALUED):
            values.append(args[i])
            i += 1
        if not values:
            raise DbtArgumentsError(f"{flag} needs a value")
        if name == "vars":
            try:
                parsed = yaml.safe_load(" ".join(values))
            except yaml.YAMLError as exc:
                raise DbtArgumentsError(f"--vars {' '.join(values)!r} is not YAML: {exc}") from None
            if not isinstance(parsed, dict):
                raise DbtArgumentsError(f"--vars {' '.join(values)!r} is not a mapping, e.g. '{{key: value}}'")
            parameters["vars"] = parsed
        elif name in _MULTI_VALUED:
            parameters[name] = " ".join([*(parameters.get(name, "").split()), *values])
        else:
            parameters[name] = values[0]
    if rest:
        parameters["dbt_args"] = rest
    return parameters


def _schedule(cron: str | None, interval: int | None, timezone: str) -> Any:
    from prefect.schedules import Cron, Interval

    if (cron is None) == (interval is None):
        raise InvalidSchedule('give one schedule: --cron "0 6 * * *" or --interval SECONDS')
    if cron is not None:
        check_cron(cron, timezone)
        return Cron(cron, timezone=timezone)
    assert interval is not None
    if interval < 1:
        raise InvalidSchedule(f"--interval {interval}: give a number of seconds of at least 1")
    return Interval(interval)


def _schedule_text(cron: str | None, interval: int | None, timezone: str) -> str:
    return f'on cron "{cron}" ({timezone})' if cron is not None else f"every {interval} s"


_HELP = """\
Serve `dbt build` as a scheduled Prefect deployment from this process.

The deployment `<project>/<name>` runs `dbt build` with the dbt flags given here on a cron
schedule or at an interval, with no work pool and no worker: this process polls for its
runs and runs each in a child process, one at a time. Every dbt node becomes a task run
and every relation an asset, as with `dbt-prefect build`. The dbt flags become the
deployment's parameters, which a custom run from the Prefect UI can change: select,
exclude, full_refresh, target, vars, only_changed, mode and dbt_args (every other flag).

Ctrl-C stops serving (and pauses the schedule). It needs a Prefect server that stays up:
PREFECT_API_URL, or a profile that sets it.
"""

_EPILOG = """\
Examples:

  dbt-prefect serve --cron "0 6 * * *"

  dbt-prefect serve --select tag:hourly --interval 3600 --name hourly

  dbt-prefect serve --exclude tag:slow --target prod --cron "30 2 * * 1-5" --timezone Europe/Berlin

Exit codes: 0 stopped with Ctrl-C or SIGTERM, 2 a usage error (nothing served), 130 interrupted
before serving.
"""


def serve(
    ctx: typer.Context,
    cron: Annotated[
        str | None,
        typer.Option("--cron", metavar="CRON", show_default=False, help='A cron schedule, e.g. "0 6 * * *".'),
    ] = None,
    interval: Annotated[
        int | None,
        typer.Option("--interval", metavar="SECONDS", show_default=False, help="Or: a run every SECONDS."),
    ] = None,
    name: Annotated[
        str, typer.Option("--name", metavar="NAME", help="The deployment's name, under the project's flow.")
    ] = "serve",
    timezone: TimezoneOption = "UTC",
    mode: Annotated[
        str,
        typer.Option(
            "--mode", metavar="MODE", help="runner (one dbt build), or per_wave or per_node (PrefectDbtOrchestrator)."
        ),
    ] = "runner",
    only_changed: Annotated[
        bool,
        typer.Option("--only-changed", help="Build only what changed since the last build (see --state-store)."),
    ] = False,
    state_store: Annotated[
        str | None,
        typer.Option(
            "--state-store",
            envvar="DBT_PREFECT_STATE_STORE",
            metavar="PATH",
            show_default=False,
            help="Where --only-changed keeps the last build's state: a folder, or a block slug.",
        ),
    ] = None,
    project_dir: ProjectDirOption = None,
    profiles_dir: Annotated[
        Path | None,
        typer.Option(
            "--profiles-dir",
            envvar="DBT_PROFILES_DIR",
            metavar="PATH",
            show_default=False,
            help="The folder of profiles.yml. Default: the project's folder if it has one, else ~/.dbt.",
        ),
    ] = None,
) -> None:
    raise typer.Exit(
        serve_build(
            list(ctx.args),
            cron=cron,
            interval=interval,
            name=name,
            timezone=timezone,
            mode=mode,
            only_changed=only_changed,
            state_store=state_store,
            project_dir=project_dir,
            profiles_dir=profiles_dir,
        )
    )


def serve_build(dbt_args: list[str], **options: Any) -> int:
    """Check everything, then serve until Ctrl-C; return the exit code."""
    try:
        return _serve_build(dbt_args, **options)
    except KeyboardInterrupt:  # before Prefect's runner, which handles its own
        print("Interrupted.", file=sys.stderr, flush=True)
        return 130


def _serve_build(
    dbt_args: list[str],
    *,
    cron: str | None,
    interval: int | None,
    name: str,
    timezone: str,
    mode: str,
    only_changed: bool,
    state_store: str | None,
    project_dir: Path | None,
    profiles_dir: Path | None,
) -> int:
    from dbt_prefect.cli.scaffold import read_project
    from dbt_prefect.cli.server import configured_api_url

    try:
        project, project_name = read_project(project_dir if project_dir is not None else Path.cwd())
        schedule = _schedule(cron, interval, timezone)
        if mode not in ("runner", "per_wave", "per_node"):
            raise DbtArgumentsError(f"--mode {mode!r}: give runner, per_wave or per_node")
        parameters = flow_parameters(dbt_args)
        if only_changed:
            if not state_store:
                raise DbtArgumentsError(
                    "--only-changed needs a place for the last build's state: --state-store PATH (a folder, "
                    "or a block slug such as local-file-system/dbt-state) or DBT_PREFECT_STATE_STORE"
                )
            if mode != "runner":
                raise DbtArgumentsError(f"--only-changed works with --mode runner, not --mode {mode}")
            parameters["only_changed"] = True
        if mode != "runner":
            parameters["mode"] = mode
        if configured_api_url() is None:
            raise ServeNeedsServer(
                "dbt-prefect serve needs a Prefect server that stays up: the deployment, its schedule and its "
                "runs live there, and the temporary server a command starts without PREFECT_API_URL schedules "
                "nothing and is gone when the command ends. Start one with `prefect server start`, then "
                "export PREFECT_API_URL=http://127.0.0.1:4200/api (or use Prefect Cloud: `prefect cloud login`)."
            )
        profiles = profiles_dir.expanduser().resolve() if profiles_dir is not None else None
        if profiles is None and (project / "profiles.yml").is_file():
            profiles = project
        usage = _dbt_usage_error(dbt_args, project, profiles)
        if usage is not None:
            raise DbtArgumentsError(usage)
    except DbtPrefectError as exc:
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR

    # The runs execute in child processes, which inherit these.
    os.environ["DBT_PROJECT_DIR"] = str(project)
    if profiles is not None:
        os.environ["DBT_PROFILES_DIR"] = str(profiles)
    if state_store:
        os.environ["DBT_PREFECT_STATE_STORE"] = state_store

    from prefect.types.entrypoint import EntrypointType

    from dbt_prefect.cli.templates.flow import dbt_build

    flow = dbt_build.with_options(name=project_name)
    print(
        f"Serving dbt build of the project {project_name} as the deployment '{project_name}/{name}', "
        f"{_schedule_text(cron, interval, timezone)}. Stop with Ctrl-C.",
        flush=True,
    )
    with _ctrl_c_stops_like_sigterm():
        flow.serve(
            name=name,
            schedules=[schedule],
            parameters=parameters,
            tags=["dbt"],
            description=f"dbt build of the project {project_name}, served by `dbt-prefect serve`.",
            entrypoint_type=EntrypointType.MODULE_PATH,
            # Builds of one project take turns: a run that comes due while one is running
            # waits for it (DuckDB allows one writing process, and warehouses prefer it too).
            limit=1,
        )
    # Prefect's runner returns once Ctrl-C or SIGTERM stopped it.
    print(f"Stopped serving '{project_name}/{name}'.", flush=True)
    return 0


@contextmanager
def _ctrl_c_stops_like_sigterm() -> Iterator[None]:
    """Ctrl-C takes the runner's SIGTERM path: pause the schedule, cancel the run in
    flight, return. Left to asyncio, Ctrl-C cancels the runner's main task, and in CI a
    cancellation that landed in the runner's polling was swallowed: serve kept serving.
    Before the runner handles SIGTERM, Ctrl-C interrupts; a second Ctrl-C exits at once."""

    def on_ctrl_c(signum: int, frame: FrameType | None) -> None:
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _dbt_usage_error(dbt_args: list[str], project: Path, profiles: Path | None) -> str | None:
    from dbt_prefect.cli.usage import dbt_usage_error

    return dbt_usage_error(["build", *dbt_args], "build", project, profiles or Path.home() / ".dbt")


def register(app: typer.Typer) -> None:
    app.command(
        "serve",
        help=_HELP,
        epilog=_EPILOG,
        options_metavar="[DBT FLAGS] [OPTIONS]",
        context_settings={
            "allow_extra_args": True,
            "ignore_unknown_options": True,
            "help_option_names": ["-h", "--help"],
        },
    )(serve)
