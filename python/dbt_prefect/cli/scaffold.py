"""``dbt-prefect init``: the files that turn a dbt project into Prefect deployments.

It writes two files, and nothing else:

- ``flows/build_<project>.py``: the flow (``templates/flow.py``, with the project's name
  and its place filled in);
- ``prefect.yaml``: a nightly build on a cron schedule, an on-demand ``build --select``,
  and, where a state store is configured, a slim-CI build of what changed; a process work
  pool; and pull steps that work as written: this folder on this machine, or a
  ``git_clone`` of the repository that holds it when that repository has a remote.

profiles.yml stays where it is. Nothing is overwritten without ``--force``, and nothing is
written at all when a check fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from dbt_prefect.cli.options import ProjectDirOption, TimezoneOption
from dbt_prefect.cli.schedules import DEFAULT_CRON, check_cron
from dbt_prefect.errors import DbtPrefectError, DbtProjectNotFound

TEMPLATES = "dbt_prefect.cli.templates"


class ScaffoldExists(DbtPrefectError):
    """The files ``dbt-prefect init`` would write are already there."""


class OutputNotWritable(DbtPrefectError):
    """The folder ``dbt-prefect init`` writes to cannot be written."""


class CodeSource(StrEnum):
    auto = "auto"
    local = "local"
    git = "git"


@dataclass(frozen=True)
class GitSource:
    repository: str
    branch: str | None
    root: Path


@dataclass(frozen=True)
class Scaffold:
    """What ``dbt-prefect init`` writes, before it writes it."""

    project: str
    out: Path
    flow_path: Path
    flow_text: str
    prefect_yaml_path: Path
    prefect_yaml_text: str
    git: GitSource | None
    profiles_in_project: bool

    @property
    def paths(self) -> list[Path]:
        return [self.prefect_yaml_path, self.flow_path]


# -- checks ----------------------------------------------------------------------------
def read_project(project_dir: Path) -> tuple[Path, str]:
    """The project's folder and name; DbtProjectNotFound if there is no dbt project."""
    import yaml

    project_dir = project_dir.expanduser().resolve()
    dbt_project = project_dir / "dbt_project.yml"
    if not dbt_project.is_file():
        where = "does not exist" if not project_dir.exists() else "has no dbt_project.yml"
        raise DbtProjectNotFound(
            f"{project_dir} {where}, so there is no dbt project to deploy. Run `dbt-prefect init` in "
            "your dbt project's folder, or pass --project-dir PATH."
        )
    try:
        config = yaml.safe_load(dbt_project.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DbtProjectNotFound(f"cannot read {dbt_project}: {exc}") from None
    name = config.get("name") if isinstance(config, dict) else None
    if not name:
        raise DbtProjectNotFound(f"{dbt_project} has no `name:`; dbt needs one too")
    return project_dir, str(name)


def check_writable(out: Path) -> None:
    """OutputNotWritable unless files can be created in ``out`` (made if missing)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "flows").mkdir(exist_ok=True)
        for folder in (out, out / "flows"):
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".dbt-prefect-init-"):
                pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputNotWritable(
            f"cannot write the deployment files to {out}: {reason}. Pass --out with a folder you can "
            "write to, or make this one writable."
        ) from None


def check_not_there(paths: list[Path]) -> None:
    there = [path for path in paths if path.exists()]
    if there:
        names = " and ".join(str(path) for path in there)
        raise ScaffoldExists(
            f"{names} already exist{'s' if len(there) == 1 else ''}; dbt-prefect init leaves them as they "
            "are. Pass --force to overwrite them, or --out to write somewhere else."
        )


# -- git -------------------------------------------------------------------------------
def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def find_git_source(folder: Path) -> GitSource | None:
    """The remote repository that holds ``folder``: its URL, the checked-out branch and
    the local clone's root. None outside git, or without a remote."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    root = _git(existing, "rev-parse", "--show-toplevel")
    if root is None:
        return None
    branch = _git(existing, "symbolic-ref", "--quiet", "--short", "HEAD")  # None when detached
    remote = None
    if branch is not None:
        remote = _git(existing, "config", f"branch.{branch}.remote")
    remotes = (_git(existing, "remote") or "").split()
    if remote not in remotes:
        remote = "origin" if "origin" in remotes else (remotes[0] if remotes else None)
    if remote is None:
        return None
    url = _git(existing, "remote", "get-url", remote)
    if url is None:
        return None
    return GitSource(repository=url, branch=branch, root=Path(root).resolve())


# -- rendering -------------------------------------------------------------------------
def _module_name(project: str) -> str:
    # Not dbt_*: dbt imports every module on sys.path whose name starts with dbt_.
    return "build_" + (re.sub(r"\W+", "_", project).strip("_").lower() or "dbt")


def _quoted(value: Any) -> str:
    """A YAML scalar: JSON's double-quoted strings are YAML's."""
    return json.dumps(value, ensure_ascii=False)


def _flow_text(project: str, project_dir: Path, flow_path: Path) -> str:
    from importlib.resources import files

    text = (files(TEMPLATES) / "flow.py").read_text(encoding="utf-8")
    relative = Path(os.path.relpath(project_dir, flow_path.parent)).as_posix()
    replacements = {
        'FLOW_NAME = "dbt"\n': f"FLOW_NAME = {_quoted(project)}\n",
        "PROJECT_DIR = Path(__file__).resolve().parent\n": (
            f"PROJECT_DIR = (Path(__file__).resolve().parent / {_quoted(relative)}).resolve()\n"
        ),
    }
    for old, new in replacements.items():
        assert old in text, f"the flow template has no line {old!r}"
        text = text.replace(old, new)
    return text


def plan_scaffold(
    project_dir: Path,
    out: Path | None,
    *,
    pool: str,
    cron: str,
    timezone: str,
    state_store: str | None,
    code: CodeSource = CodeSource.auto,
) -> Scaffold:
    """Check the inputs and render both files; raises a DbtPrefectError with the fix."""
    from importlib.metadata import version

    import jinja2

    project_dir, project = read_project(project_dir)
    check_cron(cron, timezone)
    out = (out.expanduser() if out is not None else project_dir).resolve()
    flow_path = out / "flows" / f"{_module_name(project)}.py"
    prefect_yaml_path = out / "prefect.yaml"

    git = find_git_source(out) if code is not CodeSource.local else None
    if code is CodeSource.git and git is None:
        raise DbtPrefectError(
            f"--code git: {out} is not in a git repository with a remote. Add one (git remote add origin URL), "
            "or use --code local."
        )
    git_context = None
    if git is not None:
        inside = Path(os.path.relpath(out, git.root)).as_posix()
        directory = "{{ clone.directory }}" + ("" if inside == "." else f"/{inside}")
        git_context = {"repository": git.repository, "branch": git.branch, "directory": directory}

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("dbt_prefect.cli", "templates"),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["q"] = _quoted
    prefect_yaml_text = environment.get_template("prefect.yaml.j2").render(
        project=project,
        flow_name=project,
        flow_file=flow_path.relative_to(out).as_posix(),
        entrypoint=f"{flow_path.relative_to(out).as_posix()}:dbt_build",
        pool=pool,
        cron=cron,
        timezone=timezone,
        state_store=state_store,
        git=git_context,
        directory=str(out),
        prefect_version=version("prefect"),
    )
    return Scaffold(
        project=project,
        out=out,
        flow_path=flow_path,
        flow_text=_flow_text(project, project_dir, flow_path),
        prefect_yaml_path=prefect_yaml_path,
        prefect_yaml_text=prefect_yaml_text,
        git=git,
        profiles_in_project=(project_dir / "profiles.yml").is_file(),
    )


def write_scaffold(scaffold: Scaffold, force: bool = False) -> None:
    """Write both files, each replaced whole (a temporary file renamed into place)."""
    if not force:
        check_not_there(scaffold.paths)
    check_writable(scaffold.out)
    for path, text in (
        (scaffold.flow_path, scaffold.flow_text),
        (scaffold.prefect_yaml_path, scaffold.prefect_yaml_text),
    ):
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
            f.write(text)
        os.chmod(f.name, 0o644)
        os.replace(f.name, path)


def next_steps(scaffold: Scaffold, pool: str, state_store: str | None, cron: str, timezone: str) -> str:
    here = Path.cwd().resolve()
    deploy = "prefect deploy --all" if here == scaffold.out else f"cd {scaffold.out} && prefect deploy --all"
    deployments = f'nightly (cron "{cron}", {timezone}), build-select' + (", build-changed" if state_store else "")
    lines = [
        f"Wrote the Prefect deployments of the dbt project {scaffold.project}:",
        f"  {scaffold.prefect_yaml_path}: the deployments {deployments}",
        f'  {scaffold.flow_path}: the flow "{scaffold.project}"',
    ]
    if scaffold.git is not None:
        branch = f" (branch {scaffold.git.branch})" if scaffold.git.branch else ""
        lines += [
            "",
            f"Workers clone {scaffold.git.repository}{branch} at every run: commit and push these two files first.",
        ]
    if not scaffold.profiles_in_project:
        lines += [
            "",
            "profiles.yml is not in the project folder, so a worker reads the one in ~/.dbt (or DBT_PROFILES_DIR) "
            "on its own machine. To keep credentials in Prefect blocks, template it: "
            '"{{ prefect.blocks.secret.NAME }}".',
        ]
    lines += [
        "",
        "Next:",
        f"  prefect work-pool create {pool} --type process",
        f"  {deploy}",
        f"Then `prefect worker start --pool {pool}` runs the deployments' flow runs.",
    ]
    return "\n".join(lines)


# -- the command -----------------------------------------------------------------------
_HELP = """\
Write the Prefect deployments of a dbt project: a flow module and a prefect.yaml.

`flows/build_<project>.py` holds one flow, `dbt build` of the project, with the parameters
people change per run (select, exclude, full_refresh, target, vars, only_changed, mode,
dbt_args); the Prefect UI shows them as a form. `prefect.yaml` deploys it three ways: a
nightly build on a cron schedule, an on-demand `build --select`, and, with a state store,
a slim-CI build of what changed. A process work pool runs them, with the code of this
folder, or a `git_clone` of its repository when that has a remote.

profiles.yml stays where it is. Nothing is overwritten without --force. The command prints
the next two commands to run.
"""

_EPILOG = """\
Examples:

  dbt-prefect init

  dbt-prefect init --project-dir analytics --out . --cron "30 2 * * *" --timezone Europe/Berlin

  dbt-prefect init --state-store local-file-system/dbt-state --force

Exit codes: 0 written, 2 nothing written (no dbt project, a folder that cannot be written,
files already there, an invalid cron).
"""


def init(
    project_dir: ProjectDirOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="PATH",
            show_default=False,
            help="Where to write prefect.yaml and flows/ (made if missing). Default: the dbt project's folder.",
        ),
    ] = None,
    pool: Annotated[str, typer.Option("--pool", metavar="NAME", help="The work pool of the deployments.")] = "dbt",
    cron: Annotated[str, typer.Option("--cron", metavar="CRON", help="The nightly build's schedule.")] = DEFAULT_CRON,
    timezone: TimezoneOption = "UTC",
    state_store: Annotated[
        str | None,
        typer.Option(
            "--state-store",
            envvar="DBT_PREFECT_STATE_STORE",
            metavar="PATH",
            show_default=False,
            help="Where the slim-CI deployment keeps the last build's state: a folder the worker can "
            "reach, or a Prefect block slug such as local-file-system/dbt-state. Without it, no slim-CI deployment.",
        ),
    ] = None,
    code: Annotated[
        CodeSource,
        typer.Option(
            "--code",
            help="Where workers get the code: auto (git when the folder's repository has a remote, else "
            "local), local (this folder) or git.",
        ),
    ] = CodeSource.auto,
    force: Annotated[bool, typer.Option("--force", help="Overwrite prefect.yaml and the flow module.")] = False,
) -> None:
    try:
        scaffold = plan_scaffold(
            project_dir if project_dir is not None else Path.cwd(),
            out,
            pool=pool,
            cron=cron,
            timezone=timezone,
            state_store=state_store,
            code=code,
        )
        write_scaffold(scaffold, force=force)
    except DbtPrefectError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(next_steps(scaffold, pool, state_store, cron, timezone))


def register(app: typer.Typer) -> None:
    app.command("init", help=_HELP, epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})(init)
