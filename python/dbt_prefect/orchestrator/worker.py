"""What runs on a worker process: one dbt node (or the project's hooks) in a Prefect task.

Each worker process keeps a warm dbt session per project (_worker_project.py). A node
then runs the way ``dbt build`` runs each of its nodes (the node runner's
``run_with_hooks`` through ``call_runner``), so it costs its SQL, not dbt's per-command
set-up. The first node of a project on a worker pays the parse and the session once
(``NodeOutcome.cold_start_seconds``). Where the session cannot be set up (a dbt version
it does not know) or cannot run a node (microbatch models), the node runs through
``dbtRunner(manifest=...)`` with a one-node selector instead.

dbt keeps process-wide state, so dbt invocations in one process take turns on the lock
the runner uses; run one thread per worker process (``nthreads=1``) for parallelism.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dbt.cli.main import dbtRunner
from prefect.concurrency.sync import concurrency
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger

from dbt_prefect._compat.dbt import forget_compilation, run_result
from dbt_prefect._compat.dbt_session import WarmPathUnavailable
from dbt_prefect._compat.prefect import flush_events_and_logs
from dbt_prefect.model.levels import python_level
from dbt_prefect.model.metadata import MalformedRecord, WarehouseMetadata
from dbt_prefect.model.nodes import FinishedNode
from dbt_prefect.model.package_contract import COLLECT_METADATA_ENV, COLLECT_METADATA_ON
from dbt_prefect.model.statuses import ERROR, SKIPPED, SUCCESS, classify, is_failure, prefect_state, skip_reason
from dbt_prefect.orchestrator.lost_workers import earlier_executions, record_finished
from dbt_prefect.orchestrator.warm_project import (
    ProjectSpec,
    WarmProject,
    common_args,
    resource_type,
    secret_environment,
    warm_project,
    worker_name,
)
from dbt_prefect.profiles.resolve import temporary_environ
from dbt_prefect.runner.asset_events import AssetEmitter
from dbt_prefect.runner.events import (
    JINJA_LOG_EVENTS,
    NODE_FINISHED,
    RECORD_PREFIX,
    event_level,
    event_unique_id,
    log_event,
    package_record,
)
from dbt_prefect.runner.failures import node_results
from dbt_prefect.runner.invocation import DBT_INVOCATION_LOCK, Scrub, scrubber

_logger = logging.getLogger("dbt_prefect")

# dbt commands per resource type.
NODE_COMMANDS = {
    "model": "run",
    "seed": "seed",
    "snapshot": "snapshot",
    "test": "test",
    "unit_test": "test",
    # Only dbt build runs exposures and saved queries (status no-op).
    "exposure": "build",
    "saved_query": "build",
}


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
    cold_start_seconds: float | None = None
    # Whether dbt ran the node in the worker's warm session rather than through dbtRunner.
    warm_session: bool = False
    asset_event_ids: tuple[Any, ...] = ()


def node_selector(entry: Any) -> str:
    """A selector for exactly this node: its fully qualified name and resource type."""
    return f"fqn:{'.'.join(entry.fqn)},resource_type:{resource_type(entry)}"


class _NodeLog:
    """The dbt callback for one node invocation: its lines go to the node's task run."""

    def __init__(self, unique_id: str, threshold: int, scrub: Scrub, also: frozenset[str] = frozenset()) -> None:
        # The task run's logger adapter: its logger and the task run's ids as `extra`.
        adapter = get_run_logger()
        assert isinstance(adapter, logging.LoggerAdapter), "called inside a task run"
        self.logger: logging.Logger = adapter.logger
        self.extra: dict[str, Any] = dict(adapter.extra or {})
        self.unique_id = unique_id
        self.own_ids = also | {unique_id}  # nodes whose lines are this task's own (hooks: all of them)
        self.threshold = threshold
        self.scrub = scrub
        self.node_info: Any = None
        self.run_result: Any = None
        self.metadata: WarehouseMetadata | None = None  # what the package's collect_metadata() read

    def __call__(self, msg: Any) -> None:
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
        if self.logger.isEnabledFor(level):
            log_event(self.logger, self.extra, msg, level, self.scrub)

    def _record(self, text: str) -> None:
        # The dbt package's lines for the runner (as in RunRecorder._record): kept, not logged.
        try:
            metadata = package_record(text)
        except MalformedRecord as exc:
            self.logger.warning(
                self.scrub(f"dbt-prefect ignored a malformed metadata record ({exc})"), extra=self.extra
            )
            return
        if metadata is not None and metadata.unique_id == self.unique_id:
            self.metadata = metadata


@dataclass(frozen=True)
class NodeOptions:
    """Per-build options of the node tasks (not secret, small)."""

    concurrency_limit: str | None = None
    include_compiled_code: bool = False
    disable_assets: bool = False
    # One id per run_build: a warm session trusts its relation cache for one build only.
    build_id: str | None = None


# Builds whose API this worker process reached: checked once per build, again after a failure.
_API_REACHED: set[str] = set()


def _unreachable_api(build_id: str | None) -> str | None:
    """Why this worker cannot reach the Prefect API, or None when it can."""
    if build_id is not None and build_id in _API_REACHED:
        return None
    from dbt_prefect.delivery.api import PrefectApi

    try:
        api = PrefectApi()
    except Exception as exc:
        return str(exc)
    try:
        if not api.healthy():
            return f"no answer from {api.url}/health"
    finally:
        api.close()
    if build_id is not None:
        _API_REACHED.add(build_id)
    return None


def _upstream_outcomes(upstream: Sequence[Any], unique_ids: Sequence[str]) -> list[NodeOutcome]:
    """The parents' outcomes; anything else (an exception from a parent that crashed) counts as an error."""
    outcomes = []
    for unique_id, value in zip(unique_ids, upstream, strict=True):
        if isinstance(value, NodeOutcome):
            outcomes.append(value)
        else:
            outcomes.append(NodeOutcome(unique_id=unique_id, status=ERROR, message=str(value)))
    return outcomes


def _skip_reason(project: WarmProject, parents: list[NodeOutcome]) -> str:
    # The runner's own wording, from the results of what decides whether the node runs.
    nodes = [project.catalog.get(p.unique_id) for p in parents]
    return skip_reason([n for n in nodes if n is not None], {p.unique_id: p.status for p in parents}.get)


def run_node(
    spec: ProjectSpec,
    unique_id: str,
    upstream: Sequence[Any],
    upstream_ids: Sequence[str],
    options: NodeOptions,
) -> Any:
    """Run one dbt node in the current task run; return its terminal Prefect state.

    The state is the runner's (statuses.prefect_state) and carries the NodeOutcome as
    its data, so children read their parents' results. A Failed state makes Prefect retry
    this node alone when the task has retries left.
    """
    started = time.time()
    parents = _upstream_outcomes(upstream, upstream_ids)
    blocked = [p for p in parents if is_failure(p.status) or classify(p.status).skipped]
    cold: float | None = None
    outcome = NodeOutcome(unique_id=unique_id, status=ERROR, worker=worker_name(), started=started)

    scrub = scrubber(spec.secret_env.values)
    earlier = earlier_executions()  # on Dask, after a worker died (lost_workers.py)
    try:
        lock = DBT_INVOCATION_LOCK
        problem = None if blocked or earlier.finished is not None else _unreachable_api(options.build_id)
        if earlier.finished is not None:
            outcome = earlier.finished
        elif earlier.refusal is not None:
            outcome.message = earlier.refusal
        elif blocked:
            with lock:
                project, cold = warm_project(spec)
            outcome.status = SKIPPED
            outcome.message = _skip_reason(project, parents)
        elif problem is not None:
            # Its task run, logs and assets could not be recorded: the node does not run unseen.
            outcome.message = (
                f"worker {worker_name()} cannot reach the Prefect API ({problem}), so dbt-prefect did not run "
                "this node; check PREFECT_API_URL and the network of the worker"
            )
        else:
            with _concurrency_slot(options.concurrency_limit):
                with lock:
                    project, cold = warm_project(spec)
                    outcome = _invoke_node(spec, project, unique_id, options, scrub, outcome)
    except Exception as exc:  # a node task always ends in a state the runner would give it
        outcome.status = ERROR
        outcome.message = scrub(f"{type(exc).__name__}: {exc}")
    if earlier.finished is None:
        outcome.cold_start_seconds = cold
        outcome.finished = time.time()
        record_finished(outcome)
    # A reused outcome keeps its times; its task run's new state is dated now, after this
    # execution's Running.
    state = prefect_state(outcome.status, outcome.message, time.time() if earlier.finished else outcome.finished)
    state.data = outcome
    return state


def run_hooks(spec: ProjectSpec, hook_type: str, upstream: Sequence[Any], upstream_ids: Sequence[str]) -> Any:
    """Run the project's on-run-start or on-run-end hooks in the current task run; return its state.

    An on-run-end hook sees the build's nodes as ``results``, from their outcomes
    (``upstream``). The state is Failed, with dbt's message, when a hook failed.
    """
    scrub = scrubber(spec.secret_env.values)
    status, message = ERROR, ""
    ran: list[Any] = []
    try:
        with DBT_INVOCATION_LOCK:
            project, _ = warm_project(spec)
            if project.session is None:
                raise RuntimeError(f"on-run hooks need a warm dbt session, which worker {worker_name()} could not open")
            hooks = {u: n for u, n in project.hooks.items() if hook_type in (getattr(n, "tags", None) or ())}
            results = []
            for outcome in _upstream_outcomes(upstream, upstream_ids):
                node = project.catalog.manifest_entry(outcome.unique_id)
                if node is not None:
                    results.append(run_result(node, outcome.status, outcome.message, outcome.execution_time))
            threshold = max(python_level(spec.log_level), logging.getLogger("prefect.task_runs").getEffectiveLevel())
            listener = _NodeLog(hook_type, threshold, scrub, also=frozenset(hooks))
            with secret_environment(spec.secret_env):
                ran = project.session.run_hooks(hook_type, hooks, results, listener)
        failed = [r for r in ran if is_failure(r.status)]
        status = ERROR if failed else SUCCESS
        message = scrub((failed[0].message or "") if failed else f"{len(ran)} {hook_type} hooks passed")
    except Exception as exc:  # the hook task ends Failed with the reason, like a node
        message = scrub(f"{type(exc).__name__}: {exc}")
    state = prefect_state(status, message, time.time())
    # Each hook's own result, under dbt's id for it, as dbt build reports them.
    state.data = [
        NodeOutcome(
            unique_id=r.node.unique_id,
            status=str(getattr(r.status, "value", r.status)),
            message=scrub(r.message or ""),
            execution_time=float(getattr(r, "execution_time", 0.0) or 0.0),
        )
        for r in ran
    ]
    return state


@contextmanager
def _concurrency_slot(limit_name: str | None) -> Iterator[None]:
    if not limit_name:
        yield
        return
    with concurrency(limit_name, occupy=1, strict=True):
        yield


def _invoke_node(
    spec: ProjectSpec,
    project: WarmProject,
    unique_id: str,
    options: NodeOptions,
    scrub: Scrub,
    outcome: NodeOutcome,
) -> NodeOutcome:
    entry = project.catalog.manifest_entry(unique_id)
    if entry is None:
        outcome.message = f"{unique_id} is not in the project parsed on worker {outcome.worker}"
        return outcome
    threshold = max(python_level(spec.log_level), logging.getLogger("prefect.task_runs").getEffectiveLevel())
    node_log = _NodeLog(unique_id, threshold, scrub)
    forget_compilation(project.manifest, unique_id)

    # As in the runner: the package's collect_metadata() post-hook queries the warehouse
    # only when its records become asset metadata.
    with temporary_environ({} if options.disable_assets else {COLLECT_METADATA_ENV: COLLECT_METADATA_ON}):
        if _warm_path(project, unique_id):
            outcome.warm_session = True
            _run_in_session(spec, project, unique_id, options, scrub, outcome, node_log)
        else:
            _run_with_dbt_runner(spec, project, entry, scrub, outcome, node_log)
    if not options.disable_assets and node_log.node_info is not None:
        outcome.asset_event_ids = _emit_assets(project, unique_id, outcome, node_log, options, scrub)
    return outcome


def _warm_path(project: WarmProject, unique_id: str) -> bool:
    if project.session is None:
        return False
    try:
        project.session.check_supported(unique_id)
    except WarmPathUnavailable as exc:
        _logger.debug("dbt-prefect: %s runs through dbtRunner: %s", unique_id, exc)
        return False
    return True


def _run_in_session(
    spec: ProjectSpec,
    project: WarmProject,
    unique_id: str,
    options: NodeOptions,
    scrub: Any,
    outcome: NodeOutcome,
    node_log: _NodeLog,
) -> None:
    outcome.ran_from = time.time()
    with secret_environment(spec.secret_env):
        result = project.session.run_node(unique_id, spec.full_refresh, options.build_id, node_log)
    outcome.ran_to = time.time()
    outcome.status = str(getattr(result.status, "value", result.status))
    outcome.message = scrub(result.message or "")
    outcome.execution_time = float(getattr(result, "execution_time", 0.0) or 0.0)


def _run_with_dbt_runner(
    spec: ProjectSpec, project: WarmProject, entry: Any, scrub: Scrub, outcome: NodeOutcome, node_log: _NodeLog
) -> None:
    """The fallback: a one-node dbt command on the parsed manifest (dbt's per-command set-up each time)."""
    unique_id = entry.unique_id
    command = NODE_COMMANDS[resource_type(entry)]
    args = [command, "--select", node_selector(entry), *common_args(spec, project)]
    args += ["--no-write-json", "--no-populate-cache", "--threads", "1"]
    if spec.full_refresh and command in ("run", "seed", "build"):
        args.append("--full-refresh")
    outcome.ran_from = time.time()
    with secret_environment(spec.secret_env):
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
    project: WarmProject, unique_id: str, outcome: NodeOutcome, node_log: _NodeLog, options: NodeOptions, scrub: Scrub
) -> tuple[Any, ...]:
    node = project.catalog.get(unique_id)
    assert node is not None, f"{unique_id} is not in the parsed project"
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
    emitter.node_finished(finished)
    return tuple(emitter.event_ids)


def flush_prefect(timeout: float = 30.0) -> bool:
    """Send this process's queued Prefect events and logs now (run on every worker at the end)."""
    return flush_events_and_logs(timeout)
