"""PrefectDbtOrchestrator: each dbt node a real Prefect task, on the flow's task runner.

Planning happens once, in the flow: dbt parses the project and resolves select/exclude
itself (``dbt ls`` on the parsed manifest), and planning.py turns that into the DAG of
nodes to run. Every node is then submitted to the flow's task runner with ``wait_for`` on
its upstream nodes, so a node starts as soon as its parents finish. The project's
on-run-start and on-run-end hooks run in one task each, before and after the nodes.

On the worker (_worker.py, _worker_project.py) a node costs its SQL: each worker process
keeps a warm dbt session per project (the parsed manifest, dbt's configuration and the
adapter with its connection open), set up by the first node it runs. Task-run names, states, logs,
assets and the failure summary come from the same code as the runner's (nodes.py,
tracking.py, assets.py, failures.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import allow_failure as _prefect_allow_failure

from dbt_prefect._worker import NodeOptions, NodeOutcome, run_hooks, run_node
from dbt_prefect._worker_project import ProjectSpec, SecretEnv, pack_project
from dbt_prefect.errors import OrchestratorUsageError
from dbt_prefect.planning import TEST_STRATEGIES, BuildPlan, build_plan
from dbt_prefect.settings import PrefectDbtSettings

_logger = logging.getLogger("dbt_prefect")


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclass
class NodeResult(NodeOutcome):
    """What the node task reported, with the node record and its task run: shaped like
    dbt's RunResult where the failure summary reads it (``node``, ``status``, ``message``)."""

    node: Any = None  # the DbtNode record (a HookRecord for hooks)
    task_run_id: Optional[uuid.UUID] = None


@dataclass(frozen=True)
class HookRecord:
    """The node record of a build's on-run-start or on-run-end hooks, for results and summaries."""

    name: str  # "on-run-start" or "on-run-end"
    resource_type: str = "operation"

    @property
    def unique_id(self) -> str:
        return f"operation.{self.name}"

    @property
    def task_run_name(self) -> str:
        return self.name


@dataclass
class BuildResult:
    """What run_build returns: ``success`` and ``results``, like a dbtRunnerResult's.

    ``results`` holds the nodes; ``hook_results`` the on-run-start/end hooks, when the
    project has any (a failed hook fails the build, as in dbt).
    """

    success: bool
    results: list[NodeResult] = field(default_factory=list)
    exception: Optional[BaseException] = None
    hook_results: list[NodeResult] = field(default_factory=list)

    @property
    def result(self) -> "BuildResult":
        # dbtRunnerResult.result.results: failures.summarise_failures reads it that way.
        return self

    def by_name(self) -> dict[str, NodeResult]:
        return {r.node.task_run_name: r for r in self.results}

    @property
    def failed_results(self) -> list[NodeResult]:
        from dbt_prefect.tracking import FAILED_STATUSES

        return [r for r in (*self.hook_results, *self.results) if r.status in FAILED_STATUSES]


class _AllowFailure(_prefect_allow_failure):
    """Prefect's allow_failure, in a form that survives Dask's argument packing.

    Prefect's annotations are tuple subclasses; dask (checked with dask/distributed
    2026.8 and prefect-dask 0.3.7) rebuilds tuples it finds futures in as plain tuples,
    so a plain allow_failure reaches the worker as ``(state,)`` and a failed parent
    leaves its children NotReady. Dask rebuilds objects with the namedtuple API as their
    own type, so this subclass carries that API. Elsewhere it is Prefect's allow_failure.
    """

    __slots__ = ()
    _fields = ("value",)
    _field_defaults: dict[str, Any] = {}

    @classmethod
    def _make(cls, iterable: Iterable[Any]) -> "_AllowFailure":
        return cls(*iterable)

    def _asdict(self) -> dict[str, Any]:
        return {"value": self[0]}

    def _replace(self, **changes: Any) -> "_AllowFailure":
        return type(self)(changes.get("value", self[0]))

    def __getnewargs__(self) -> tuple[Any]:
        return (self[0],)


# --------------------------------------------------------------------------------------
# The node task
# --------------------------------------------------------------------------------------


@task(name="dbt node", persist_result=False, cache_policy=NO_CACHE)
def dbt_node(
    spec: ProjectSpec,
    unique_id: str,
    upstream: list[Any],
    upstream_ids: list[str],
    options: NodeOptions,
) -> Any:
    """One dbt node, run on whichever worker the task runner picks."""
    return run_node(spec, unique_id, upstream, upstream_ids, options)


@task(name="dbt hooks", persist_result=False, cache_policy=NO_CACHE)
def dbt_hooks(spec: ProjectSpec, hook_type: str, upstream: list[Any], upstream_ids: list[str]) -> Any:
    """The project's on-run-start hooks before the first node, or its on-run-end hooks after the last."""
    return run_hooks(spec, hook_type, upstream, upstream_ids)


# --------------------------------------------------------------------------------------
# The orchestrator
# --------------------------------------------------------------------------------------


class PrefectDbtOrchestrator:
    """Run ``dbt build`` node by node, each node a Prefect task on the flow's task runner.

    Call ``run_build`` inside a flow. The flow's task runner decides where nodes run:
    ThreadPoolTaskRunner (nodes take turns in the flow's process: dbt is not thread-safe),
    ProcessPoolTaskRunner (parallel local processes), or prefect-dask's DaskTaskRunner for
    parallel worker processes, local or remote. Each process keeps a warm dbt session.
    """

    def __init__(
        self,
        settings: Optional[PrefectDbtSettings] = None,
        retries: int = 0,
        retry_delay_seconds: Union[float, Sequence[float]] = 0,
        concurrency: Union[int, str, None] = None,
        test_strategy: str = "immediate",
        raise_on_failure: bool = True,
        include_compiled_code: bool = False,
        disable_assets: bool = False,
        ship_project: bool = False,
        record_timeout_seconds: float = 60.0,
    ) -> None:
        if test_strategy not in TEST_STRATEGIES:
            raise OrchestratorUsageError(
                f"test_strategy must be one of {', '.join(TEST_STRATEGIES)}, not {test_strategy!r}"
            )
        if isinstance(concurrency, bool) or (isinstance(concurrency, int) and concurrency < 1):
            raise OrchestratorUsageError(
                f"concurrency must be a positive integer or the name of a Prefect global concurrency limit, not {concurrency!r}"
            )
        self.settings = settings if settings is not None else PrefectDbtSettings()
        self.retries = retries
        self.retry_delay_seconds = retry_delay_seconds
        self.concurrency = concurrency
        self.test_strategy = test_strategy
        self.raise_on_failure = raise_on_failure
        self.include_compiled_code = include_compiled_code
        self.disable_assets = disable_assets
        # Ship the project files with every node task instead of reading a shared path.
        self.ship_project = ship_project
        self.record_timeout_seconds = record_timeout_seconds
        self.last_plan: Optional[BuildPlan] = None

    # -- public ----------------------------------------------------------------------
    def run_build(
        self,
        select: Union[str, Sequence[str], None] = None,
        exclude: Union[str, Sequence[str], None] = None,
        full_refresh: bool = False,
        target: Optional[str] = None,
        vars: Optional[dict[str, Any]] = None,
    ) -> BuildResult:
        """Plan the build, run every node as a task, wait for all of them; return the results."""
        from prefect.context import FlowRunContext

        flow_ctx = FlowRunContext.get()
        if flow_ctx is None or flow_ctx.flow_run is None:
            raise OrchestratorUsageError(
                "PrefectDbtOrchestrator.run_build must be called inside a Prefect flow "
                "(its nodes are tasks on the flow's task runner); use PrefectDbtRunner outside flows"
            )
        from dbt_prefect.runner import _check_project

        project_dir = Path(self.settings.project_dir).expanduser().resolve()
        _check_project(project_dir)
        vars_text = json.dumps(vars, sort_keys=True) if vars else None
        started = time.time()

        self._check_concurrency_limit()
        spec, plan, catalog = self._plan(project_dir, select, exclude, full_refresh, target, vars_text)
        self.last_plan = plan
        flow_logger = _flow_logger()
        flow_logger.info(
            "Orchestrating %d dbt nodes on %s (tests: %s)",
            len(plan.nodes), type(flow_ctx.task_runner).__name__, self.test_strategy,
        )
        with self._concurrency_limit(flow_ctx.flow_run.id) as limit_name:
            options = NodeOptions(
                concurrency_limit=limit_name,
                include_compiled_code=self.include_compiled_code,
                disable_assets=self.disable_assets,
                build_id=uuid.uuid4().hex,
            )
            hook_futures: dict[str, Any] = {}
            if "on-run-start" in plan.hook_types:
                hook_futures["on-run-start"] = self._submit_hooks(spec, "on-run-start", {})
            futures = self._submit(plan, spec, options, hook_futures.get("on-run-start"))
            if "on-run-end" in plan.hook_types:
                hook_futures["on-run-end"] = self._submit_hooks(spec, "on-run-end", futures)
            from prefect.futures import wait

            wait([*futures.values(), *hook_futures.values()])
        result = self._collect(plan, futures, catalog)
        result.hook_results = [self._hook_result(name, future) for name, future in hook_futures.items()]
        result.success = result.success and not result.failed_results
        self._wait_until_recorded(flow_ctx.task_runner, {**futures, **hook_futures}, result)
        counts: dict[str, int] = {}
        for r in result.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        flow_logger.info(
            "Finished the orchestrated dbt build of %d nodes in %.1f s: %s",
            len(result.results), time.time() - started,
            ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to do",
        )
        if not result.success and self.raise_on_failure:
            from dbt_prefect.failures import summarise_failures

            failure = summarise_failures("build", BuildResult(success=False, results=result.failed_results))
            if failure is not None:
                raise failure
        return result

    # -- planning --------------------------------------------------------------------
    def _plan(
        self, project_dir: Path, select: Any, exclude: Any, full_refresh: bool, target: Optional[str], vars_text: Optional[str]
    ) -> tuple[ProjectSpec, BuildPlan, Any]:
        from dbt.cli.main import dbtRunner

        from dbt_prefect.args import parse_invocation
        from dbt_prefect.levels import to_dbt_level
        from dbt_prefect.nodes import NodeCatalog
        from dbt_prefect.profiles import PROFILES_FILE, resolved_profiles
        from dbt_prefect.runner import _DBT_INVOCATION_LOCK, _translate_dbt_exception

        profiles_dir = Path(self.settings.profiles_dir).expanduser()
        common: list[str] = ["--project-dir", str(project_dir)]
        if self.settings.target_path is not None:
            common += ["--target-path", str(self.settings.target_path)]
        if target:
            common += ["--target", target]
        if vars_text:
            common += ["--vars", vars_text]
        invocation = parse_invocation(["build"])
        with _DBT_INVOCATION_LOCK:
            with resolved_profiles(profiles_dir) as profiles:
                rendered, secret_env = _stable_secret_names(
                    (Path(profiles.profiles_dir) / PROFILES_FILE).read_text(encoding="utf-8"), profiles.secret_env
                )
                args = [*common, "--profiles-dir", str(profiles.profiles_dir)]
                parsed = dbtRunner().invoke(["parse", *args], log_level="none")
                if parsed.exception is not None or not parsed.success:
                    raise _translate_dbt_exception(
                        parsed.exception or RuntimeError("dbt parse did not succeed"), invocation, project_dir, profiles_dir
                    ) from None
                manifest = parsed.result
                ls_args = ["ls", *args, "--output", "json", "--output-keys", "unique_id"]
                for flag, value in (("--select", select), ("--exclude", exclude)):
                    if value:
                        ls_args += [flag, *([value] if isinstance(value, str) else list(value))]
                listed = dbtRunner(manifest=manifest).invoke(ls_args, log_level="none")
                if listed.exception is not None or not listed.success:
                    raise _translate_dbt_exception(
                        listed.exception or RuntimeError("dbt ls did not succeed"), invocation, project_dir, profiles_dir
                    ) from None
        selected = [json.loads(line)["unique_id"] for line in listed.result or []]
        catalog = NodeCatalog(manifest)
        plan = build_plan(catalog, selected, self.test_strategy)
        hook_tags = {
            tag
            for n in manifest.nodes.values()
            if str(getattr(n.resource_type, "value", n.resource_type)) == "operation"
            for tag in (getattr(n, "tags", None) or ())
        }
        plan.hook_types = tuple(t for t in ("on-run-start", "on-run-end") if t in hook_tags)
        archive = pack_project(project_dir) if self.ship_project else None
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
            log_level=to_dbt_level(self.settings.log_level),
            archive=archive,
        )
        return spec, plan, catalog

    # -- execution -------------------------------------------------------------------
    def _submit_hooks(self, spec: ProjectSpec, hook_type: str, after: dict[str, Any]) -> Any:
        """One task for the hooks of one type; on-run-end runs after every node and sees their results."""
        upstream_ids = list(after)
        return dbt_hooks.with_options(name=hook_type, task_run_name=hook_type).submit(
            spec=spec,
            hook_type=hook_type,
            upstream=[_AllowFailure(after[u]) for u in upstream_ids],
            upstream_ids=upstream_ids,
        )

    @staticmethod
    def _hook_result(hook_type: str, future: Any) -> NodeResult:
        state = future.state
        return NodeResult(
            unique_id=HookRecord(hook_type).unique_id,
            node=HookRecord(hook_type),
            status="error" if state.is_failed() or state.is_crashed() else "success",
            message=str(state.message or ""),
            task_run_id=future.task_run_id,
        )

    def _submit(
        self, plan: BuildPlan, spec: ProjectSpec, options: NodeOptions, start_hooks: Optional[Any] = None
    ) -> dict[str, Any]:
        allow_failure = _AllowFailure
        futures: dict[str, Any] = {}
        for planned in plan.nodes:
            node_task = dbt_node.with_options(
                name=planned.task_run_name,
                task_run_name=planned.task_run_name,
                retries=self.retries,
                retry_delay_seconds=self.retry_delay_seconds,
            )
            upstream_ids = list(planned.parents)
            futures[planned.unique_id] = node_task.submit(
                spec=spec,
                unique_id=planned.unique_id,
                # allow_failure: a child runs (and records Skipped) when a parent failed.
                upstream=[allow_failure(futures[p]) for p in upstream_ids],
                upstream_ids=upstream_ids,
                options=options,
                wait_for=[allow_failure(futures[w]) for w in planned.waits_for]
                # Every node descends from a root, and the roots wait for on-run-start.
                + ([allow_failure(start_hooks)] if start_hooks is not None and not planned.waits_for else []),
            )
        return futures

    def _collect(self, plan: BuildPlan, futures: dict[str, Any], catalog: Any) -> BuildResult:
        results: list[NodeResult] = []
        for planned in plan.nodes:
            future = futures[planned.unique_id]
            state = future.state
            outcome: Any = None
            try:
                outcome = state.result(raise_on_failure=False)
            except Exception as exc:  # a worker that died, a result that cannot be read
                outcome = exc
            if not isinstance(outcome, NodeOutcome):
                message = str(state.message or outcome or "the node task did not finish")
                outcome = NodeOutcome(unique_id=planned.unique_id, status="error", message=message)
            fields = {f.name: getattr(outcome, f.name) for f in dataclasses.fields(NodeOutcome)}
            results.append(NodeResult(**fields, node=catalog.get(planned.unique_id), task_run_id=future.task_run_id))
        from dbt_prefect.tracking import FAILED_STATUSES

        success = not any(r.status in FAILED_STATUSES for r in results)
        return BuildResult(success=success, results=results)

    def _wait_until_recorded(self, task_runner: Any, futures: dict[str, Any], result: BuildResult) -> None:
        """Every task run terminal and every asset event stored on the server, as the runner promises."""
        from dbt_prefect.assets import AssetEmitter
        from dbt_prefect.nodes import NodeCatalog
        from dbt_prefect.tracking import RunRecorder

        client = _dask_client(task_runner)
        if client is not None:
            try:
                from dbt_prefect._worker import flush_prefect

                client.run(flush_prefect, self.record_timeout_seconds)
            except Exception as exc:
                _logger.debug("could not flush Prefect events on the Dask workers: %s", exc)
        # The runner's readback (tracking.RunRecorder / assets.AssetEmitter), given the ids.
        recorder = RunRecorder(target=None, catalog=NodeCatalog(), threshold=logging.INFO)
        recorder.task_run_ids = [f.task_run_id for f in futures.values()]
        missing = recorder.wait_until_recorded(self.record_timeout_seconds)
        emitter = AssetEmitter(NodeCatalog())
        emitter.event_ids = [e for r in result.results for e in r.asset_event_ids]
        emitter.wait_until_recorded(self.record_timeout_seconds)
        if missing:
            _logger.warning(
                "%d of %d dbt task runs were not yet visible on the Prefect server after %.0f s",
                len(missing), len(recorder.task_run_ids), self.record_timeout_seconds,
            )

    # -- concurrency -----------------------------------------------------------------
    def _check_concurrency_limit(self) -> None:
        """A named limit must exist before anything runs."""
        if not isinstance(self.concurrency, str):
            return
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            try:
                client.read_global_concurrency_limit_by_name(self.concurrency)
            except Exception as exc:
                raise OrchestratorUsageError(
                    f"no Prefect global concurrency limit named {self.concurrency!r} "
                    f"(create it with `prefect gcl create {self.concurrency} --limit N`, or pass an integer)"
                ) from exc

    def _concurrency_limit(self, flow_run_id: Any) -> Any:
        from contextlib import contextmanager

        @contextmanager
        def limit() -> Any:
            if self.concurrency is None:
                yield None
                return
            from prefect.client.orchestration import get_client

            if isinstance(self.concurrency, str):
                yield self.concurrency
                return
            from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

            name = f"dbt-prefect-orchestrator-{flow_run_id}-{uuid.uuid4().hex[:8]}"
            with get_client(sync_client=True) as client:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=int(self.concurrency), active=True)
                )
            try:
                yield name
            finally:
                with get_client(sync_client=True) as client:
                    try:
                        client.delete_global_concurrency_limit_by_name(name)
                    except Exception as exc:
                        _logger.warning("could not delete the concurrency limit %s: %s", name, exc)

        return limit()


def _stable_secret_names(rendered: str, secret_env: Any) -> tuple[str, SecretEnv]:
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


def _flow_logger() -> Any:
    from prefect.logging import get_run_logger

    return get_run_logger()


def _dask_client(task_runner: Any) -> Any:
    """The distributed.Client of a prefect-dask DaskTaskRunner, else None."""
    if type(task_runner).__name__ != "DaskTaskRunner":
        return None
    try:
        return task_runner.client
    except Exception:
        return None


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
