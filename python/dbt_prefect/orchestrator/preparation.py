"""Before an orchestrated build runs: one parse, dbt's own selection, the plan, and the
ProjectSpec that every node task carries to its worker."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbt.cli.main import dbtRunner
from dbt.contracts.graph.manifest import Manifest

from dbt_prefect._compat.dbt import install_fast_cycle_check
from dbt_prefect.errors import OrchestratorUsageError
from dbt_prefect.model.levels import to_dbt_level
from dbt_prefect.model.nodes import NodeCatalog
from dbt_prefect.model.translator import DbtPrefectTranslator
from dbt_prefect.orchestrator.freshness import source_freshness, stale_upstream
from dbt_prefect.orchestrator.plan import NodeGraph, build_plan
from dbt_prefect.orchestrator.shipping import pack_project
from dbt_prefect.orchestrator.warm_project import ProjectSpec, SecretEnv
from dbt_prefect.profiles.resolve import PROFILES_FILE, resolved_profiles
from dbt_prefect.runner.args import parse_invocation
from dbt_prefect.runner.invocation import DBT_INVOCATION_LOCK, translate_dbt_exception
from dbt_prefect.settings import PrefectDbtSettings

_logger = logging.getLogger("dbt_prefect")


@dataclass(frozen=True)
class BuildOptions:
    """The orchestrator's settings that shape the plan and the ProjectSpec."""

    settings: PrefectDbtSettings
    test_strategy: str
    ship_project: bool
    translator: DbtPrefectTranslator
    # The select= of the orchestrator's lifecycle hooks, resolved by dbt against the build's manifest.
    hook_selectors: tuple[str, ...] = ()


@dataclass(frozen=True)
class BuildRequest:
    """One run_build (or plan) call: what to build, and the dbt flags every invocation gets."""

    project_dir: Path
    select: Any = None
    exclude: Any = None
    full_refresh: bool = False
    target: str | None = None
    vars_text: str | None = None
    state_args: tuple[str, ...] = ()  # --state, --defer, --defer-state, --favor-state
    extra_args: tuple[str, ...] = ()  # extra_cli_args, validated
    threads: int | None = None
    only_fresh_sources: bool = False
    manifest_path: Path | None = None

    def selection_args(self) -> list[str]:
        args: list[str] = []
        for flag, value in (("--select", self.select), ("--exclude", self.exclude)):
            if value:
                args += [flag, *([value] if isinstance(value, str) else list(value))]
        return args

    @property
    def build_args(self) -> tuple[str, ...]:
        """The dbt command line the build stands for, as hooks and the run report show it."""
        args = ["build", *self.selection_args()]
        if self.full_refresh:
            args.append("--full-refresh")
        if self.target:
            args += ["--target", self.target]
        return tuple(args)

    def wave_args(self) -> tuple[str, ...]:
        """The flags of each per-wave dbt build, besides the paths and the selection."""
        args: list[str] = []
        if self.target:
            args += ["--target", self.target]
        if self.vars_text:
            args += ["--vars", self.vars_text]
        if self.threads is not None:
            args += ["--threads", str(self.threads)]
        if self.full_refresh:
            args.append("--full-refresh")
        return (*args, *self.state_args, *self.extra_args)

    def invocation_args(self) -> dict[str, Any]:
        """The build as the ``args`` of run_results.json (what dbt retry reruns)."""
        args: dict[str, Any] = {
            "project_dir": str(self.project_dir),
            "select": _as_list(self.select),
            "exclude": _as_list(self.exclude),
            "full_refresh": self.full_refresh,
        }
        if self.target:
            args["target"] = self.target
        if self.threads is not None:
            args["threads"] = self.threads
        if self.vars_text:
            args["vars"] = json.loads(self.vars_text)
        if "--state" in self.state_args:
            args["state"] = self.state_args[self.state_args.index("--state") + 1]
        if "--defer" in self.state_args:
            args["defer"] = True
        return args

    def state_args_for_ls(self) -> list[str]:
        """dbt ls needs only --state, for the state: selectors."""
        if "--state" not in self.state_args:
            return []
        return ["--state", self.state_args[self.state_args.index("--state") + 1]]


def _as_list(value: Any) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


@dataclass(frozen=True)
class PreparedBuild:
    spec: ProjectSpec
    plan: NodeGraph
    catalog: NodeCatalog
    # Per hook selector, the unique_ids dbt selects with it.
    hook_selection: Mapping[str, frozenset[str]]
    request: BuildRequest
    # Nodes downstream of a stale source (only_fresh_sources) -> why they are skipped.
    stale: Mapping[str, str] = field(default_factory=dict)


def prepare_build(options: BuildOptions, request: BuildRequest) -> PreparedBuild:
    """Parse the project once (or read the given manifest), let dbt resolve the selection,
    and plan the DAG; return what every node task needs (the ProjectSpec), the plan, and
    the catalog of node records."""
    settings = options.settings
    project_dir = request.project_dir
    profiles_dir = Path(settings.profiles_dir).expanduser()
    common = _common_args(settings, request)
    invocation = parse_invocation(["build"])
    stale: dict[str, str] = {}
    install_fast_cycle_check()
    with DBT_INVOCATION_LOCK:
        with resolved_profiles(profiles_dir) as profiles:
            rendered, secret_env = _stable_secret_names(
                (Path(profiles.profiles_dir) / PROFILES_FILE).read_text(encoding="utf-8"), profiles.secret_env
            )
            args = [*common, "--profiles-dir", str(profiles.profiles_dir)]
            manifest = _manifest(request, args, invocation, profiles_dir)
            ls_args = ["ls", *args, *request.state_args_for_ls(), "--output", "json", "--output-keys", "unique_id"]
            ls_args += request.selection_args()
            listed = dbtRunner(manifest=manifest).invoke(ls_args, log_level="none")
            hook_selection = {
                selector: _list_selected(manifest, [*args, "--resource-type", "all"], selector)
                for selector in options.hook_selectors
            }
            if listed.exception is not None or not listed.success:
                raise translate_dbt_exception(
                    listed.exception or RuntimeError("dbt ls did not succeed"), invocation, project_dir, profiles_dir
                ) from None
            assert isinstance(listed.result, list), "dbt ls returns its output lines"
            selected = [json.loads(line)["unique_id"] for line in listed.result]
            catalog = NodeCatalog(manifest, options.translator)
            if request.only_fresh_sources:
                stale = stale_upstream(catalog, selected, source_freshness(manifest, args))
    plan = build_plan(catalog, selected, options.test_strategy)
    # Only what the plan runs can be skipped (ephemeral models are folded away).
    planned = plan.by_id()
    stale = {unique_id: reason for unique_id, reason in stale.items() if unique_id in planned}
    hook_tags = {
        tag
        for n in manifest.nodes.values()
        if n.resource_type == "operation"
        for tag in (getattr(n, "tags", None) or ())
    }
    plan.hook_types = tuple(t for t in ("on-run-start", "on-run-end") if t in hook_tags)
    archive = pack_project(project_dir) if options.ship_project else None
    key_parts = {
        "project_dir": str(project_dir),
        "fingerprint": _project_fingerprint(project_dir) if archive is None else hashlib.sha256(archive).hexdigest(),
        "profiles": rendered,
        "target": request.target,
        "vars": request.vars_text,
        "state": request.state_args,
        "extra": request.extra_args,
    }
    spec = ProjectSpec(
        key=hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest(),
        project_dir=str(project_dir),
        profiles_text=rendered,
        secret_env=secret_env,
        target=request.target,
        vars_text=request.vars_text,
        full_refresh=request.full_refresh,
        log_level=to_dbt_level(settings.log_level),
        archive=archive,
        translator=options.translator,
        state_args=request.state_args,
        extra_args=request.extra_args,
    )
    return PreparedBuild(spec, plan, catalog, hook_selection, request, stale)


def _common_args(settings: PrefectDbtSettings, request: BuildRequest) -> list[str]:
    """The flags every dbt invocation of the build gets, but the profiles directory."""
    common: list[str] = ["--project-dir", str(request.project_dir)]
    if settings.given_target_path is not None:
        common += ["--target-path", str(settings.given_target_path)]
    if request.target:
        common += ["--target", request.target]
    if request.vars_text:
        common += ["--vars", request.vars_text]
    return common


@contextmanager
def dbt_args(settings: PrefectDbtSettings, request: BuildRequest) -> Iterator[list[str]]:
    """The build's dbt flags, with the rendered profiles, while this process may run dbt."""
    with DBT_INVOCATION_LOCK:
        with resolved_profiles(Path(settings.profiles_dir).expanduser()) as profiles:
            yield [*_common_args(settings, request), "--profiles-dir", str(profiles.profiles_dir)]


def _manifest(request: BuildRequest, args: list[str], invocation: Any, profiles_dir: Path) -> Manifest:
    """The manifest of the build: read from manifest_path when given, else parsed by dbt."""
    if request.manifest_path is not None:
        path = request.manifest_path
        if not path.is_absolute():
            path = request.project_dir / path
        if not path.is_file():
            raise OrchestratorUsageError(
                f"manifest_path {path} does not exist: pass the path of a manifest.json dbt wrote "
                "(dbt parse writes target/manifest.json), or leave manifest_path unset to parse the project"
            )
        from dbt.contracts.graph.manifest import WritableManifest

        return Manifest.from_writable_manifest(WritableManifest.read_and_check_versions(str(path)))
    parsed = dbtRunner().invoke(["parse", *args], log_level="none")
    if parsed.exception is not None or not parsed.success:
        raise translate_dbt_exception(
            parsed.exception or RuntimeError("dbt parse did not succeed"), invocation, request.project_dir, profiles_dir
        ) from None
    manifest = parsed.result
    assert isinstance(manifest, Manifest), "dbt parse returns the Manifest"
    return manifest


def _list_selected(manifest: Manifest, args: list[str], selector: str) -> frozenset[str]:
    """What ``dbt ls --select <selector>`` lists on the parsed manifest (no second parse)."""
    ls_args = ["ls", *args, "--select", selector, "--output", "json", "--output-keys", "unique_id"]
    listed = dbtRunner(manifest=manifest).invoke(ls_args, log_level="none")
    if not listed.success or not isinstance(listed.result, list):
        _logger.warning("dbt could not resolve the hook selector %r, so its hooks fire for nothing", selector)
        return frozenset()
    return frozenset(json.loads(line)["unique_id"] for line in listed.result)


def _stable_secret_names(rendered: str, secret_env: Mapping[str, str]) -> tuple[str, SecretEnv]:
    """Rename the secret env vars of a rendered profile to names that do not change per build.

    profiles.resolved_profiles numbers them per process (DBT_ENV_SECRET_PREFECT_<N>);
    the rendered text is part of the worker cache key, which must stay the same from one
    build to the next. The names keep dbt's DBT_ENV_SECRET_ prefix, so dbt scrubs them.
    """
    renamed: dict[str, str] = {}
    # Numbered in order of appearance; the quotes around each name keep _1 from matching _12.
    for index, name in enumerate(sorted(secret_env, key=lambda n: rendered.find(f"'{n}'")), start=1):
        stable = f"DBT_ENV_SECRET_PREFECT_ORCHESTRATOR_{index}"
        rendered = rendered.replace(f"'{name}'", f"'{stable}'").replace(f'"{name}"', f'"{stable}"')
        renamed[stable] = secret_env[name]
    return rendered, SecretEnv(renamed)


def _project_fingerprint(project_dir: Path) -> str:
    """Changes when a file of the project or of a package it installed changes: names,
    sizes and modification times.

    Symlinked folders are followed, because dbt installs a ``local:`` package as a link,
    but never into a folder the walk is already inside: dbt's link for ``local: ../``
    points at the folder that holds the project, and following it blindly loops."""
    digest = hashlib.sha256()
    for path in _project_files(project_dir):
        try:
            stat = path.stat()
        except OSError:
            continue
        digest.update(f"{path.relative_to(project_dir)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


_NOT_FINGERPRINTED_DIRS = frozenset({"target", "logs", ".git", ".venv", "__pycache__"})
_NOT_FINGERPRINTED_SUFFIXES = (".duckdb", ".duckdb.wal", ".pyc")


def _project_files(project_dir: Path) -> Iterator[Path]:
    """The files under project_dir in a stable order, through symlinked folders, each
    folder at most once along one path (a link back up the tree ends there)."""
    stack: list[tuple[Path, tuple[str, ...]]] = [(project_dir, (os.path.realpath(project_dir),))]
    while stack:
        directory, inside = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name, reverse=True)
        except OSError:
            continue
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows a link
            except OSError:
                continue
            if is_dir:
                if entry.name in _NOT_FINGERPRINTED_DIRS:
                    continue
                real = os.path.realpath(entry.path)
                if real in inside:
                    continue
                stack.append((Path(entry.path), (*inside, real)))
            elif not entry.name.endswith(_NOT_FINGERPRINTED_SUFFIXES):
                yield Path(entry.path)
