"""A worker process's warm projects: the files, the profile and a warm dbt session per project.

A worker (a Dask worker process, a process-pool process, or the flow's own process for
thread pools) keeps a module-level cache, one entry per project key: the project files
(a shared path, or an archive shipped with the task), a private profiles directory, the
Manifest dbt parsed there and a warm dbt session (_dbt_compat.NodeSession: flags,
RuntimeConfig, the adapter with its connection kept open). The first node of a project
on a worker pays the parse and the session once.
"""

from __future__ import annotations

import atexit
import functools
import io
import logging
import os
import shutil
import socket
import tarfile
import tempfile
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbt.cli.main import dbtRunner
from dbt.contracts.graph.manifest import Manifest
from dbt.contracts.state import PreviousState

from dbt_prefect._compat.dbt import install_fast_cycle_check
from dbt_prefect._compat.dbt_session import NodeSession
from dbt_prefect.errors import DbtCommandFailed
from dbt_prefect.model.nodes import NodeCatalog
from dbt_prefect.model.translator import DbtPrefectTranslator
from dbt_prefect.profiles.resolve import temporary_environ

_logger = logging.getLogger("dbt_prefect")


class SecretEnv:
    """Secret environment variables for dbt, held in memory only.

    It travels with each node task (pickled in memory by the task runner) and is set in
    ``os.environ`` only while dbt runs a node, as the runner does. Its repr hides the values.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})

    def items(self) -> Any:
        return self._values.items()

    @property
    def values(self) -> frozenset[str]:
        return frozenset(v for v in self._values.values() if v)

    def __getstate__(self) -> dict[str, str]:
        return self._values

    def __setstate__(self, state: dict[str, str]) -> None:
        self._values = dict(state)

    def __repr__(self) -> str:
        return f"SecretEnv(<{len(self._values)} hidden>)"


@dataclass(frozen=True)
class ProjectSpec:
    """Everything a worker needs to run the nodes of one orchestrated build."""

    key: str  # digest of everything below except the secrets: the worker cache key
    project_dir: str  # where the project is on a shared path; unused when `archive` is set
    profiles_text: str  # the rendered profiles.yml: secrets are env_var() references
    secret_env: SecretEnv = field(default_factory=SecretEnv)
    target: str | None = None
    vars_text: str | None = None
    full_refresh: bool = False
    log_level: str = "info"  # dbt's level for the node's log lines in Prefect
    archive: bytes | None = None  # the project as a .tar.gz, when it is shipped with the task
    # Names and keys on the worker (pickled with the spec; None: the defaults).
    translator: DbtPrefectTranslator | None = None
    # --state/--defer/--defer-state/--favor-state, and run_build's extra_cli_args.
    state_args: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()

    def __repr__(self) -> str:
        shipped = f", archive={len(self.archive)} bytes" if self.archive else ""
        return f"ProjectSpec(key={self.key[:12]}, project_dir={self.project_dir!r}{shipped})"


class WarmProject:
    __slots__ = (
        "spec_key",
        "project_dir",
        "profiles_dir",
        "target_path",
        "manifest",
        "catalog",
        "session",
        "hooks",
        "_tmp",
    )

    def __init__(self, spec_key: str, project_dir: Path, profiles_dir: Path, target_path: Path, tmp: Path) -> None:
        self.spec_key = spec_key
        self.project_dir = project_dir
        self.profiles_dir = profiles_dir
        self.target_path = target_path
        self.manifest: Any = None
        self.catalog: Any = None
        self.session: Any = None  # _dbt_compat.NodeSession, or None: the dbtRunner path
        self.hooks: dict[str, Any] = {}  # on-run-start/end hook nodes, kept out of the manifest
        self._tmp = tmp

    def close(self) -> None:
        try:
            if self.session is not None:
                self.session.close()
        finally:  # the private files go even when the connection would not close
            shutil.rmtree(self._tmp, ignore_errors=True)


# Warm projects of this process, by ProjectSpec.key. A handful at most.
_CACHE: dict[str, WarmProject] = {}
_CACHE_LIMIT = 8
# Why the warm path is off in this process, logged once.
_FALLBACK_LOGGED: set[str] = set()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def secret_environment(secret_env: SecretEnv) -> AbstractContextManager[None]:
    """The secret env vars, set only while dbt runs (as profiles.resolved_profiles does)."""
    return temporary_environ(dict(secret_env.items()))


def _private_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o700)
    return path


# A worker's private files live in dbt-prefect-worker-<pid>-*: removed when the process
# exits normally (atexit), and by the next worker on the machine when it was killed.
WORKER_DIR_PREFIX = "dbt-prefect-worker-"


@functools.cache
def _arrange_cleanup() -> None:
    """Once per process, before its first warm project: cleanup at exit, and of dead workers."""
    atexit.register(close_all)
    sweep_dead_worker_dirs(Path(tempfile.gettempdir()))


def _worker_dir() -> Path:
    _arrange_cleanup()
    return _private_dir(f"{WORKER_DIR_PREFIX}{os.getpid()}-")


def close_connections() -> None:
    """Close the database connections of this process's warm projects; they stay warm
    otherwise, and their next node connects again. Call with DBT_INVOCATION_LOCK held."""
    for project in list(_CACHE.values()):
        if project.session is not None:
            project.session.close()


def close_all() -> None:
    """Close this process's warm projects: their sessions, and their private files."""
    while _CACHE:
        _, project = _CACHE.popitem()
        try:
            project.close()
        except Exception:  # at exit: the other projects still close
            pass


def sweep_dead_worker_dirs(root: Path) -> list[Path]:
    """Remove the private directories of this user's worker processes that are gone (a
    worker killed, or one whose exit skipped atexit). Only on POSIX, where a pid can be
    probed without touching the process."""
    if os.name != "posix":
        return []
    removed = []
    for path in root.glob(f"{WORKER_DIR_PREFIX}*"):
        pid_text = path.name[len(WORKER_DIR_PREFIX) :].split("-", 1)[0]
        try:
            if not pid_text.isdigit() or path.stat().st_uid != os.getuid() or _alive(int(pid_text)):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def common_args(spec: ProjectSpec, project: WarmProject) -> list[str]:
    args = [
        "--project-dir",
        str(project.project_dir),
        "--profiles-dir",
        str(project.profiles_dir),
        "--target-path",
        str(project.target_path),
        "--log-path",
        str(project.target_path / "logs"),
    ]
    if spec.target:
        args += ["--target", spec.target]
    if spec.vars_text:
        args += ["--vars", spec.vars_text]
    return args


def warm_project(spec: ProjectSpec) -> tuple[WarmProject, float | None]:
    """This process's parsed copy of the project; parsed on first use. Call with the lock held."""
    project = _CACHE.get(spec.key)
    if project is not None:
        return project, None
    started = time.perf_counter()
    install_fast_cycle_check()  # a node that cannot take the warm path runs a one-node dbt build
    tmp = _worker_dir()
    try:
        if spec.archive is not None:
            project_dir = tmp / "project"
            with tarfile.open(fileobj=io.BytesIO(spec.archive), mode="r:gz") as archive:
                archive.extractall(project_dir, filter="data")
        else:
            project_dir = Path(spec.project_dir)
        profiles_dir = tmp / "profiles"
        profiles_dir.mkdir(mode=0o700)
        # The rendered profiles.yml holds env_var() references, never a secret value.
        _write_private(profiles_dir / "profiles.yml", spec.profiles_text)
        # Each worker writes compiled SQL, graph summaries and dbt.log to its own
        # directory, so workers sharing a project directory never write the same file.
        target_path = project_dir / "target" / "dbt-prefect-workers" / f"{socket.gethostname()}-{os.getpid()}"
        target_path.mkdir(parents=True, exist_ok=True)
        project = WarmProject(spec.key, project_dir, profiles_dir, target_path, tmp)

        with secret_environment(spec.secret_env):
            result = dbtRunner().invoke(
                ["parse", *common_args(spec, project), "--no-write-json"],
                log_level="none",
            )
        if not result.success or result.result is None:
            raise DbtCommandFailed(
                f"dbt could not parse {project_dir} on worker {worker_name()}: {result.exception} "
                "(the worker needs the project files and the packages: a shared path, or ship_project=True)"
            )
        manifest = result.result
        assert isinstance(manifest, Manifest), "dbt parse returns the Manifest"
        # Project hooks (on-run-start/end) run once per build, in their own tasks
        # (run_hooks), never with a node: keep them out of this worker's manifest.
        for unique_id in [u for u, n in manifest.nodes.items() if resource_type(n) == "operation"]:
            project.hooks[unique_id] = manifest.nodes.pop(unique_id)
        if "--defer" in spec.state_args:
            _merge_deferred_state(manifest, spec.state_args, project_dir)
        project.manifest = manifest
        project.catalog = NodeCatalog(manifest, spec.translator)
        with secret_environment(spec.secret_env):
            project.session = _open_session(spec, project)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if len(_CACHE) >= _CACHE_LIMIT:
        _, oldest = next(iter(_CACHE.items()))
        _CACHE.pop(oldest.spec_key, None)
        oldest.close()
    _CACHE[spec.key] = project
    return project, time.perf_counter() - started


def _merge_deferred_state(manifest: Manifest, state_args: tuple[str, ...], project_dir: Path) -> None:
    """What dbt build does with --defer: the selected nodes' parents that are not built
    here resolve to the relations of the state's manifest (the warm session runs nodes
    without dbt's task set-up, which would otherwise do this)."""
    flag = "--defer-state" if "--defer-state" in state_args else "--state"
    if flag not in state_args:
        return
    state_dir = Path(state_args[state_args.index(flag) + 1])
    previous = PreviousState(state_path=state_dir, target_path=state_dir, project_root=project_dir)
    if previous.manifest is None:
        raise DbtCommandFailed(f"defer=True, but there is no manifest.json in the state path {state_dir}")
    manifest.merge_from_artifact(other=previous.manifest)


def _session_args(spec: ProjectSpec, project: WarmProject) -> list[str]:
    # No manifest.json/run_results.json per node; no relation-cache warm-up of the whole
    # project: the materializations list a schema when they first need it.
    return [
        *common_args(spec, project),
        "--no-write-json",
        "--no-populate-cache",
        "--threads",
        "1",
        "--log-level",
        "none",
        *spec.state_args,
        *spec.extra_args,
    ]


def _open_session(spec: ProjectSpec, project: WarmProject) -> Any:
    """The warm dbt session of this project, or None (logged once) when dbt does not allow it."""
    try:
        session = NodeSession(_session_args(spec, project), project.manifest)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        if reason not in _FALLBACK_LOGGED:
            _FALLBACK_LOGGED.add(reason)
            _logger.warning(
                "dbt-prefect: no warm dbt session on worker %s (%s); nodes run through dbtRunner, "
                "paying dbt's per-command set-up each",
                worker_name(),
                reason,
            )
        return None
    return session


def resource_type(entry: Any) -> str:
    value = getattr(entry, "resource_type", "")
    return str(getattr(value, "value", value))
