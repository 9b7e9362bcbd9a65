"""What runs on a worker process: one dbt node, with a warm dbt session per project.

A worker (a Dask worker process, a process-pool process, or the flow's own process for
thread pools) keeps a module-level cache, one entry per project key: the project files,
a private profiles directory, the Manifest dbt parsed there and a warm dbt session
(_dbt_compat.NodeSession: flags, RuntimeConfig, the adapter with its connection kept
open). A node then runs the way ``dbt build`` runs each of its nodes (the node runner's
``run_with_hooks`` through ``call_runner``), so it costs its SQL, not dbt's per-command
set-up. The first node of a project on a worker pays the parse and the session once
(``NodeOutcome.cold_start_seconds``). Where the session cannot be set up (a dbt version
it does not know) or cannot run a node (microbatch models), the node runs through
``dbtRunner(manifest=...)`` with a one-node selector instead.

dbt keeps process-wide state, so dbt invocations in one process take turns on the lock
the runner uses; run one thread per worker process (``nthreads=1``) for parallelism.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import socket
import tarfile
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from dbt_prefect._dbt_compat import forget_compilation

_logger = logging.getLogger("dbt_prefect")

# dbt commands per resource type.
NODE_COMMANDS = {"model": "run", "seed": "seed", "snapshot": "snapshot", "test": "test", "unit_test": "test"}


class SecretEnv:
    """Secret environment variables for dbt, held in memory only.

    It travels with each node task (pickled in memory by the task runner) and is set in
    ``os.environ`` only while dbt runs a node, as the runner does. Its repr hides the values.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Optional[Mapping[str, str]] = None) -> None:
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
    target: Optional[str] = None
    vars_text: Optional[str] = None
    full_refresh: bool = False
    log_level: str = "info"  # dbt's level for the node's log lines in Prefect
    archive: Optional[bytes] = None  # the project as a .tar.gz, when it is shipped with the task

    def __repr__(self) -> str:
        shipped = f", archive={len(self.archive)} bytes" if self.archive else ""
        return f"ProjectSpec(key={self.key[:12]}, project_dir={self.project_dir!r}{shipped})"


@dataclass
class NodeOutcome:
    """What one node task did: the node's dbt status and where and when it ran."""

    unique_id: str
    status: str
    message: str = ""
    execution_time: float = 0.0
    worker: str = ""
    started: float = 0.0
    finished: float = 0.0
    # When dbt ran the node (inside the concurrency slot), as POSIX timestamps.
    ran_from: float = 0.0
    ran_to: float = 0.0
    # Seconds this task spent preparing the project on a cold worker (parse), else None.
    cold_start_seconds: Optional[float] = None
    asset_event_ids: tuple[Any, ...] = ()


class _WarmProject:
    __slots__ = (
        "spec_key", "project_dir", "profiles_dir", "target_path", "manifest", "catalog", "session", "hooks", "_tmp",
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
        if self.session is not None:
            self.session.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


# Warm projects of this process, by ProjectSpec.key. A handful at most.
_CACHE: dict[str, _WarmProject] = {}
_CACHE_LIMIT = 8
# How many warm dbt sessions this process opened (the tests read it on the workers).
SESSIONS_OPENED = 0
# Why the warm path is off in this process, logged once.
_FALLBACK_LOGGED: set[str] = set()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _invocation_lock() -> Any:
    # The runner's lock: a runner and an orchestrator node in one process take turns too.
    from dbt_prefect.runner import _DBT_INVOCATION_LOCK

    return _DBT_INVOCATION_LOCK


def _secret_environment(secret_env: SecretEnv) -> Any:
    """The secret env vars, set only while dbt runs (as profiles.resolved_profiles does)."""
    from dbt_prefect.profiles import temporary_environ

    return temporary_environ(dict(secret_env.items()))


def _private_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o700)
    return path


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _common_args(spec: ProjectSpec, project: _WarmProject) -> list[str]:
    args = [
        "--project-dir", str(project.project_dir),
        "--profiles-dir", str(project.profiles_dir),
        "--target-path", str(project.target_path),
        "--log-path", str(project.target_path / "logs"),
    ]
    if spec.target:
        args += ["--target", spec.target]
    if spec.vars_text:
        args += ["--vars", spec.vars_text]
    return args


def warm_project(spec: ProjectSpec) -> tuple[_WarmProject, Optional[float]]:
    """This process's parsed copy of the project; parsed on first use. Call with the lock held."""
    project = _CACHE.get(spec.key)
    if project is not None:
        return project, None
    started = time.perf_counter()
    tmp = _private_dir("dbt-prefect-worker-")
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
        project = _WarmProject(spec.key, project_dir, profiles_dir, target_path, tmp)

        from dbt.cli.main import dbtRunner

        from dbt_prefect.errors import DbtCommandFailed
        from dbt_prefect.nodes import NodeCatalog

        with _secret_environment(spec.secret_env):
            result = dbtRunner().invoke(
                ["parse", *_common_args(spec, project), "--no-write-json"],
                log_level="none",
            )
        if not result.success or result.result is None:
            raise DbtCommandFailed(
                f"dbt could not parse {project_dir} on worker {worker_name()}: {result.exception} "
                "(the worker needs the project files and the packages: a shared path, or ship_project=True)"
            )
        manifest = result.result
        # Project hooks (on-run-start/end) run once per build, in their own tasks
        # (run_hooks), never with a node: keep them out of this worker's manifest.
        for unique_id in [u for u, n in manifest.nodes.items() if _resource_type(n) == "operation"]:
            project.hooks[unique_id] = manifest.nodes.pop(unique_id)
        project.manifest = manifest
        project.catalog = NodeCatalog(manifest)
        with _secret_environment(spec.secret_env):
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


def _session_args(spec: ProjectSpec, project: _WarmProject) -> list[str]:
    # No manifest.json/run_results.json per node; no relation-cache warm-up of the whole
    # project: the materializations list a schema when they first need it.
    return [*_common_args(spec, project), "--no-write-json", "--no-populate-cache", "--threads", "1", "--log-level", "none"]


def _open_session(spec: ProjectSpec, project: _WarmProject) -> Any:
    """The warm dbt session of this project, or None (logged once) when dbt does not allow it."""
    global SESSIONS_OPENED
    try:
        from dbt_prefect._dbt_compat import NodeSession

        session = NodeSession(_session_args(spec, project), project.manifest)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        if reason not in _FALLBACK_LOGGED:
            _FALLBACK_LOGGED.add(reason)
            _logger.warning(
                "dbt-prefect: no warm dbt session on worker %s (%s); nodes run through dbtRunner, "
                "paying dbt's per-command set-up each", worker_name(), reason,
            )
        return None
    SESSIONS_OPENED += 1
    return session


def sessions_opened() -> int:
    """How many warm dbt sessions this process opened (for tests, run on the workers)."""
    return SESSIONS_OPENED


def _resource_type(entry: Any) -> str:
    value = getattr(entry, "resource_type", "")
    return str(getattr(value, "value", value))


def node_selector(entry: Any) -> str:
    """A selector for exactly this node: its fully qualified name and resource type."""
    return f"fqn:{'.'.join(entry.fqn)},resource_type:{_resource_type(entry)}"


class _NodeLog:
    """The dbt callback for one node invocation: its lines go to the node's task run."""

    def __init__(self, unique_id: str, threshold: int, scrub: Any, also: frozenset[str] = frozenset()) -> None:
        from prefect.logging import get_run_logger

        adapter = get_run_logger()
        self.logger: logging.Logger = getattr(adapter, "logger", adapter)
        self.extra: dict[str, Any] = dict(getattr(adapter, "extra", {}) or {})
        self.unique_id = unique_id
        self.own_ids = also | {unique_id}  # nodes whose lines are this task's own (hooks: all of them)
        self.threshold = threshold
        self.scrub = scrub
        self.node_info: Any = None
        self.run_result: Any = None
        self.metadata: Any = None  # what the dbt package's collect_metadata() post-hook read

    def __call__(self, msg: Any) -> None:
        from dbt_prefect.events import (
            JINJA_LOG_EVENTS, NODE_FINISHED, RECORD_PREFIX, event_level, event_text, event_timestamp, event_unique_id,
        )

        if msg.info.name in JINJA_LOG_EVENTS and msg.info.msg.startswith(RECORD_PREFIX):
            self._record(msg.info.msg)
            return
        unique_id = event_unique_id(msg)
        if msg.info.name == NODE_FINISHED and unique_id == self.unique_id:
            self.node_info = msg.data.node_info
            self.run_result = msg.data.run_result
        level = event_level(msg)
        # The node's own lines, as in the runner; of the run-level lines of this one-node
        # invocation ("Found 12 models", the summary) only warnings and errors.
        if unique_id in self.own_ids:
            if level < self.threshold:
                return
        elif level < max(self.threshold, logging.WARNING):
            return
        if not self.logger.isEnabledFor(level):
            return
        record = self.logger.makeRecord(
            self.logger.name, level, "dbt", 0, self.scrub(event_text(msg)), None, None, extra=self.extra
        )
        created = event_timestamp(msg)
        record.created = created
        record.msecs = (created - int(created)) * 1000
        self.logger.handle(record)

    def _record(self, text: str) -> None:
        # The dbt package's lines for the runner (tracking.RunRecorder._record): kept, not logged.
        from dbt_prefect.events import METADATA_RECORD
        from dbt_prefect.metadata import MalformedRecord, parse_metadata_record

        if not text.startswith(METADATA_RECORD):
            return
        try:
            metadata = parse_metadata_record(text[len(METADATA_RECORD):])
        except MalformedRecord as exc:
            self.logger.warning(self.scrub(f"dbt-prefect ignored a malformed metadata record ({exc})"), extra=self.extra)
            return
        if metadata.unique_id == self.unique_id:
            self.metadata = metadata


@dataclass(frozen=True)
class NodeOptions:
    """Per-build options of the node tasks (not secret, small)."""

    concurrency_limit: Optional[str] = None
    include_compiled_code: bool = False
    disable_assets: bool = False
    # One id per run_build: a warm session trusts its relation cache for one build only.
    build_id: Optional[str] = None


def _upstream_outcomes(upstream: Sequence[Any], unique_ids: Sequence[str]) -> list[NodeOutcome]:
    """The parents' outcomes; anything else (an exception from a parent that crashed) counts as an error."""
    outcomes = []
    for unique_id, value in zip(unique_ids, upstream):
        if isinstance(value, NodeOutcome):
            outcomes.append(value)
        else:
            outcomes.append(NodeOutcome(unique_id=unique_id, status="error", message=str(value)))
    return outcomes


def _skip_reason(project: _WarmProject, node: Any, parents: list[NodeOutcome]) -> str:
    # The runner's own wording (RunRecorder._skip_reason), from the parents' results.
    from dbt_prefect.tracking import FinishedNode, RunRecorder

    recorder = RunRecorder(target=None, catalog=project.catalog, threshold=logging.INFO)
    for outcome in parents:
        parent = project.catalog.get(outcome.unique_id)
        if parent is not None:
            recorder.finished[outcome.unique_id] = FinishedNode(
                node=parent, status=outcome.status, message=outcome.message,
                task_run_id=None, node_info=None, run_result=None,
            )
    return recorder._skip_reason(node)


def run_node(
    spec: ProjectSpec,
    unique_id: str,
    upstream: Sequence[Any],
    upstream_ids: Sequence[str],
    options: NodeOptions,
) -> Any:
    """Run one dbt node in the current task run; return its terminal Prefect state.

    The state is the runner's (tracking.state_for_status) and carries the NodeOutcome as
    its data, so children read their parents' results. A Failed state makes Prefect retry
    this node alone when the task has retries left.
    """
    from dbt_prefect.failures import node_results
    from dbt_prefect.tracking import FAILED_STATUSES, state_for_status

    started = time.time()
    parents = _upstream_outcomes(upstream, upstream_ids)
    blocked = [p for p in parents if p.status in FAILED_STATUSES or p.status == "skipped"]
    cold: Optional[float] = None
    outcome = NodeOutcome(unique_id=unique_id, status="error", worker=worker_name(), started=started)
    from dbt_prefect.runner import _scrubber

    scrub = _scrubber(spec.secret_env.values)
    try:
        lock = _invocation_lock()
        if blocked:
            with lock:
                project, cold = warm_project(spec)
            node = project.catalog.get(unique_id)
            outcome.status = "skipped"
            outcome.message = _skip_reason(project, node, parents)
        else:
            with _concurrency_slot(options.concurrency_limit):
                with lock:
                    project, cold = warm_project(spec)
                    outcome = _invoke_node(spec, project, unique_id, options, scrub, outcome, node_results)
    except Exception as exc:  # a node task always ends in a state the runner would give it
        outcome.status = "error"
        outcome.message = scrub(f"{type(exc).__name__}: {exc}")
    outcome.cold_start_seconds = cold
    outcome.finished = time.time()
    state = state_for_status(outcome.status, outcome.message, outcome.finished)
    state.data = outcome
    return state


def run_hooks(spec: ProjectSpec, hook_type: str, upstream: Sequence[Any], upstream_ids: Sequence[str]) -> Any:
    """Run the project's on-run-start or on-run-end hooks in the current task run; return its state.

    An on-run-end hook sees the build's nodes as ``results``, from their outcomes
    (``upstream``). The state is Failed, with dbt's message, when a hook failed.
    """
    from dbt_prefect._dbt_compat import run_result
    from dbt_prefect.levels import python_level
    from dbt_prefect.runner import _scrubber
    from dbt_prefect.tracking import state_for_status

    scrub = _scrubber(spec.secret_env.values)
    status, message = "error", ""
    try:
        with _invocation_lock():
            project, _ = warm_project(spec)
            if project.session is None:
                raise RuntimeError(f"on-run hooks need a warm dbt session, which worker {worker_name()} could not open")
            hooks = {u: n for u, n in project.hooks.items() if hook_type in (getattr(n, "tags", None) or ())}
            results = []
            for outcome in _upstream_outcomes(upstream, upstream_ids):
                node = project.manifest.nodes.get(outcome.unique_id) or project.manifest.unit_tests.get(outcome.unique_id)
                if node is not None:
                    results.append(run_result(node, outcome.status, outcome.message, outcome.execution_time))
            threshold = max(python_level(spec.log_level), logging.getLogger("prefect.task_runs").getEffectiveLevel())
            listener = _NodeLog(hook_type, threshold, scrub, also=frozenset(hooks))
            with _secret_environment(spec.secret_env):
                ran = project.session.run_hooks(hook_type, hooks, results, listener)
        failed = [r for r in ran if str(getattr(r.status, "value", r.status)) == "error"]
        status = "error" if failed else "success"
        message = scrub((failed[0].message or "") if failed else f"{len(ran)} {hook_type} hooks passed")
    except Exception as exc:  # the hook task ends Failed with the reason, like a node
        message = scrub(f"{type(exc).__name__}: {exc}")
    return state_for_status(status, message, time.time())


@contextmanager
def _concurrency_slot(limit_name: Optional[str]) -> Iterator[None]:
    if not limit_name:
        yield
        return
    from prefect.concurrency.sync import concurrency

    with concurrency(limit_name, occupy=1, strict=True):
        yield


def _invoke_node(
    spec: ProjectSpec,
    project: _WarmProject,
    unique_id: str,
    options: NodeOptions,
    scrub: Any,
    outcome: NodeOutcome,
    node_results: Any,
) -> NodeOutcome:
    from dbt_prefect.levels import python_level

    entry = project.catalog.manifest_entry(unique_id)
    if entry is None:
        outcome.message = f"{unique_id} is not in the project parsed on worker {outcome.worker}"
        return outcome
    threshold = max(python_level(spec.log_level), logging.getLogger("prefect.task_runs").getEffectiveLevel())
    node_log = _NodeLog(unique_id, threshold, scrub)
    forget_compilation(project.manifest, unique_id)
    from dbt_prefect.profiles import temporary_environ
    from dbt_prefect.tracking import COLLECT_METADATA_ENV

    # As in the runner: the package's collect_metadata() post-hook queries the warehouse
    # only when its records become asset metadata.
    with temporary_environ({} if options.disable_assets else {COLLECT_METADATA_ENV: "1"}):
        if _warm_path(project, unique_id):
            _run_in_session(spec, project, unique_id, options, scrub, outcome, node_log)
        else:
            _run_with_dbt_runner(spec, project, entry, scrub, outcome, node_log, node_results)
    if not options.disable_assets and node_log.node_info is not None:
        outcome.asset_event_ids = _emit_assets(project, unique_id, outcome, node_log, options, scrub)
    return outcome


def _warm_path(project: _WarmProject, unique_id: str) -> bool:
    if project.session is None:
        return False
    from dbt_prefect._dbt_compat import WarmPathUnavailable

    try:
        project.session.check_supported(unique_id)
    except WarmPathUnavailable as exc:
        _logger.debug("dbt-prefect: %s runs through dbtRunner: %s", unique_id, exc)
        return False
    return True


def _run_in_session(
    spec: ProjectSpec, project: _WarmProject, unique_id: str, options: NodeOptions, scrub: Any,
    outcome: NodeOutcome, node_log: "_NodeLog",
) -> None:
    outcome.ran_from = time.time()
    with _secret_environment(spec.secret_env):
        result = project.session.run_node(unique_id, spec.full_refresh, options.build_id, node_log)
    outcome.ran_to = time.time()
    outcome.status = str(getattr(result.status, "value", result.status))
    outcome.message = scrub(result.message or "")
    outcome.execution_time = float(getattr(result, "execution_time", 0.0) or 0.0)


def _run_with_dbt_runner(
    spec: ProjectSpec, project: _WarmProject, entry: Any, scrub: Any, outcome: NodeOutcome,
    node_log: "_NodeLog", node_results: Any,
) -> None:
    """The fallback: a one-node dbt command on the parsed manifest (dbt's per-command set-up each time)."""
    from dbt.cli.main import dbtRunner

    unique_id = entry.unique_id
    command = NODE_COMMANDS[_resource_type(entry)]
    args = [command, "--select", node_selector(entry), *_common_args(spec, project)]
    args += ["--no-write-json", "--no-populate-cache", "--threads", "1"]
    if spec.full_refresh and command in ("run", "seed", "build"):
        args.append("--full-refresh")
    outcome.ran_from = time.time()
    with _secret_environment(spec.secret_env):
        result = dbtRunner(manifest=project.manifest, callbacks=[node_log]).invoke(args, log_level="none")
    outcome.ran_to = time.time()
    entries = [e for e in node_results(result) if getattr(getattr(e, "node", None), "unique_id", None) == unique_id]
    if entries:
        status = getattr(entries[0].status, "value", entries[0].status)
        outcome.status = str(status)
        outcome.message = scrub(entries[0].message or "")
        outcome.execution_time = float(getattr(entries[0], "execution_time", 0.0) or 0.0)
    elif result.exception is not None:
        outcome.message = scrub(f"dbt failed: {type(result.exception).__name__}: {result.exception}")
    else:
        outcome.message = f"dbt did not run {unique_id} (selector {node_selector(entry)!r} matched nothing)"


def _emit_assets(
    project: _WarmProject, unique_id: str, outcome: NodeOutcome, node_log: _NodeLog, options: NodeOptions, scrub: Any
) -> tuple[Any, ...]:
    from prefect.context import TaskRunContext

    from dbt_prefect.assets import AssetEmitter
    from dbt_prefect.tracking import FinishedNode, state_for_status

    node = project.catalog.get(unique_id)
    task_ctx = TaskRunContext.get()
    emitter = AssetEmitter(project.catalog, include_compiled_code=options.include_compiled_code, scrub=scrub)
    finished = FinishedNode(
        node=node,
        status=outcome.status,
        message=outcome.message,
        task_run_id=task_ctx.task_run.id if task_ctx is not None else None,
        node_info=node_log.node_info,
        run_result=node_log.run_result,
        metadata=node_log.metadata,
    )
    emitter.node_finished(finished, state_for_status(outcome.status, outcome.message, time.time()))
    return tuple(emitter.event_ids)


def flush_prefect(timeout: float = 30.0) -> bool:
    """Send this process's queued Prefect events and logs now (run on every worker at the end)."""
    from dbt_prefect._prefect_compat import flush_events_and_logs

    return flush_events_and_logs(timeout)


def pack_project(project_dir: Path, exclude_top: Sequence[str] = ("target", "logs", ".git", ".venv")) -> bytes:
    """The project directory as a .tar.gz, for workers without a shared path."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as archive:
        for child in sorted(project_dir.iterdir()):
            if child.name in exclude_top or child.name.endswith((".duckdb", ".duckdb.wal")):
                continue
            if child.name == "profiles.yml":
                continue  # the profile travels rendered, separately
            archive.add(child, arcname=child.name, recursive=True)
    return buffer.getvalue()
