"""Before an orchestrated build runs: one parse, dbt's own selection, the plan, and the
ProjectSpec that every node task carries to its worker."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbt.cli.main import dbtRunner
from dbt.contracts.graph.manifest import Manifest

from dbt_prefect.model.levels import to_dbt_level
from dbt_prefect.model.nodes import NodeCatalog
from dbt_prefect.model.translator import DbtPrefectTranslator
from dbt_prefect.orchestrator.plan import BuildPlan, build_plan
from dbt_prefect.orchestrator.warm_project import ProjectSpec, SecretEnv, pack_project
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
class PreparedBuild:
    spec: ProjectSpec
    plan: BuildPlan
    catalog: NodeCatalog
    # Per hook selector, the unique_ids dbt selects with it.
    hook_selection: Mapping[str, frozenset[str]]


def prepare_build(
    options: BuildOptions,
    project_dir: Path,
    select: Any,
    exclude: Any,
    full_refresh: bool,
    target: str | None,
    vars_text: str | None,
) -> PreparedBuild:
    """Parse the project once, let dbt resolve the selection, and plan the DAG; return what
    every node task needs (the ProjectSpec), the plan, and the catalog of node records."""
    settings = options.settings
    profiles_dir = Path(settings.profiles_dir).expanduser()
    common: list[str] = ["--project-dir", str(project_dir)]
    if settings.given_target_path is not None:
        common += ["--target-path", str(settings.given_target_path)]
    if target:
        common += ["--target", target]
    if vars_text:
        common += ["--vars", vars_text]
    invocation = parse_invocation(["build"])
    with DBT_INVOCATION_LOCK:
        with resolved_profiles(profiles_dir) as profiles:
            rendered, secret_env = _stable_secret_names(
                (Path(profiles.profiles_dir) / PROFILES_FILE).read_text(encoding="utf-8"), profiles.secret_env
            )
            args = [*common, "--profiles-dir", str(profiles.profiles_dir)]
            parsed = dbtRunner().invoke(["parse", *args], log_level="none")
            if parsed.exception is not None or not parsed.success:
                raise translate_dbt_exception(
                    parsed.exception or RuntimeError("dbt parse did not succeed"), invocation, project_dir, profiles_dir
                ) from None
            manifest = parsed.result
            assert isinstance(manifest, Manifest), "dbt parse returns the Manifest"
            ls_args = ["ls", *args, "--output", "json", "--output-keys", "unique_id"]
            for flag, value in (("--select", select), ("--exclude", exclude)):
                if value:
                    ls_args += [flag, *([value] if isinstance(value, str) else list(value))]
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
    plan = build_plan(catalog, selected, options.test_strategy)
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
        "target": target,
        "vars": vars_text,
    }
    spec = ProjectSpec(
        key=hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest(),
        project_dir=str(project_dir),
        profiles_text=rendered,
        secret_env=secret_env,
        target=target,
        vars_text=vars_text,
        full_refresh=full_refresh,
        log_level=to_dbt_level(settings.log_level),
        archive=archive,
        translator=options.translator,
    )
    return PreparedBuild(spec, plan, catalog, hook_selection)


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
    """Changes when a project file changes: names, sizes and modification times."""
    digest = hashlib.sha256()
    skip = {"target", "logs", ".git", ".venv", "__pycache__"}
    for root, dirs, files in os.walk(project_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        for name in sorted(files):
            if name.endswith((".duckdb", ".duckdb.wal", ".pyc")):
                continue
            path = Path(root) / name
            try:
                stat = path.stat()
            except OSError:
                continue
            digest.update(f"{path.relative_to(project_dir)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
