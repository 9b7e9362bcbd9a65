"""PrefectDbtOrchestrator: Prefect runs the dbt DAG, wave by wave or node by node.

Planning happens once, in the flow's process (preparation.py): dbt parses the project
(or a given manifest is read) and resolves select/exclude itself, and plan.py turns that
into the DAG of nodes to run. Then:
- PER_WAVE (per_wave.py, the default): one dbt invocation per wave, in this process;
- PER_NODE (per_node.py): one task per node on a task runner, each worker process with
  a warm dbt session.
Either way every node is its own task run with its logs, state and assets, and the
build's results come back in the official format (results.py).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from prefect.context import FlowRunContext

from dbt_prefect._compat.dbt import release_duckdb_file
from dbt_prefect._compat.prefect import flush_events_and_logs
from dbt_prefect.errors import DbtBuildFailed, OrchestratorUsageError
from dbt_prefect.model.nodes import NodeCatalog
from dbt_prefect.model.statuses import CACHED, SKIPPED, summary_counts, summary_line
from dbt_prefect.model.translator import DbtPrefectTranslator
from dbt_prefect.orchestrator.artifacts import publish_node_build_report, write_build_run_results
from dbt_prefect.orchestrator.cache import HIT, BuildCache
from dbt_prefect.orchestrator.cli_args import take_vars, validate_extra_cli_args
from dbt_prefect.orchestrator.concurrency import check_concurrency_limit
from dbt_prefect.orchestrator.options import (
    CacheConfig,
    ExecutionMode,
    TestStrategy,
    as_execution_mode,
    as_test_strategy,
    check_combination,
)
from dbt_prefect.orchestrator.per_node import (
    PerNodeBuild,
    dbt_hooks,
    hook_results_of,
    node_task_runner,
    runs_in_flow_process,
)
from dbt_prefect.orchestrator.per_wave import WaveOptions, node_of, run_waves
from dbt_prefect.orchestrator.plan import BuildPlan, NodeGraph, preview
from dbt_prefect.orchestrator.preparation import BuildOptions, BuildRequest, PreparedBuild, dbt_args, prepare_build
from dbt_prefect.orchestrator.results import BuildResult, NodeResult
from dbt_prefect.orchestrator.warm_project import close_connections
from dbt_prefect.orchestrator.worker import NodeOptions, NodeOutcome
from dbt_prefect.runner.failures import failure_lines
from dbt_prefect.runner.hooks import HookRegistration, InvocationHooks, LifecycleHooks
from dbt_prefect.runner.invocation import DBT_INVOCATION_LOCK, check_project
from dbt_prefect.runner.readback import wait_until_recorded
from dbt_prefect.runner.recorder import RunRecorder
from dbt_prefect.runner.target import RunTarget, current_run_logger
from dbt_prefect.settings import PrefectDbtSettings

_logger = logging.getLogger("dbt_prefect")
# dbt's own warning for a command that selects no node (dbt.events.types.NothingToDo).
NOTHING_TO_DO = "Nothing to do. Try checking your model configs and model specification args"


class PrefectDbtOrchestrator(HookRegistration):
    """Run ``dbt build`` with Prefect driving the DAG: per wave (one dbt invocation per
    wave, in the flow's process) or per node (one task per node on a task runner).

    The parameters are the official prefect-dbt orchestrator's; ``ship_project``,
    ``record_timeout_seconds`` and ``translator`` are dbt-prefect's own.
    """

    def __init__(
        self,
        settings: PrefectDbtSettings | None = None,
        manifest_path: Path | None = None,
        executor: Any = None,
        threads: int | None = None,
        state_path: Path | None = None,
        defer: bool = False,
        defer_state_path: Path | None = None,
        favor_state: bool = False,
        execution_mode: ExecutionMode = ExecutionMode.PER_WAVE,
        retries: int = 0,
        retry_delay_seconds: int | float | list[float] = 30,
        concurrency: str | int | None = None,
        task_runner_type: type | None = None,
        cache: CacheConfig | None = None,
        test_strategy: TestStrategy = TestStrategy.IMMEDIATE,
        create_summary_artifact: bool = True,
        include_compiled_code: bool = False,
        write_run_results: bool = False,
        disable_assets: bool = False,
        raise_on_failure: bool = True,
        *,
        ship_project: bool = False,
        record_timeout_seconds: float = 60.0,
        translator: DbtPrefectTranslator | None = None,
    ) -> None:
        if executor is not None:
            raise OrchestratorUsageError(
                "dbt-prefect runs dbt Core in the flow's process or on the task runner's workers; it has no "
                "executor= (the dbt Cloud executor is not supported). Leave executor unset."
            )
        self.execution_mode = as_execution_mode(execution_mode)
        self.test_strategy = as_test_strategy(test_strategy)
        check_combination(self.execution_mode, retries, cache, concurrency)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise OrchestratorUsageError(f"threads must be a positive integer, not {threads!r}")
        self.settings = (settings if settings is not None else PrefectDbtSettings()).model_copy()
        self.manifest_path = Path(manifest_path) if manifest_path is not None else None
        self.threads = threads
        self.state_path = state_path
        self.defer = defer
        self.defer_state_path = defer_state_path
        self.favor_state = favor_state
        self.retries = retries
        self.retry_delay_seconds = retry_delay_seconds
        self.concurrency = concurrency
        self.task_runner_type = task_runner_type
        self.cache = cache
        self.create_summary_artifact = create_summary_artifact
        self.include_compiled_code = include_compiled_code
        self.write_run_results = write_run_results
        self.disable_assets = disable_assets
        self.raise_on_failure = raise_on_failure
        # Ship the project files with every node task instead of reading a shared path.
        self.ship_project = ship_project
        self.record_timeout_seconds = record_timeout_seconds
        self.translator = translator if translator is not None else DbtPrefectTranslator()
        self.last_plan: NodeGraph | None = None
        # Lifecycle hooks (@orchestrator.on_run_start, .post_model, .on_run_end), as the runner's.
        self.hooks = LifecycleHooks()

    # -- public ----------------------------------------------------------------------
    def plan(
        self,
        select: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        full_refresh: bool = False,
        only_fresh_sources: bool = False,
        target: str | None = None,
        extra_cli_args: Sequence[str] | None = None,
    ) -> BuildPlan:
        """What run_build would run, in waves, without running any node."""
        with _database_released():
            prepared = self._prepare(select, exclude, full_refresh, only_fresh_sources, target, extra_cli_args, None)
            predictions = None
            if self.cache is not None:
                # The sources as they are now: run_build reads them again after the on-run-start hooks.
                predictions = self._cache_decisions(prepared).predictions()
        return preview(prepared.plan, dict(prepared.stale), self.execution_mode is ExecutionMode.PER_WAVE, predictions)

    def run_build(
        self,
        select: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        full_refresh: bool = False,
        only_fresh_sources: bool = False,
        target: str | None = None,
        extra_cli_args: Sequence[str] | None = None,
        *,
        vars: dict[str, Any] | None = None,
    ) -> BuildResult:
        """Plan the build, run every node, and return the results dict (unique_id -> result)."""
        # However the build ends, no connection of this process holds the database after it.
        with _database_released():
            flow_ctx = FlowRunContext.get()
            in_flow = flow_ctx is not None and flow_ctx.flow_run is not None
            if self.execution_mode is ExecutionMode.PER_NODE and not in_flow:
                raise OrchestratorUsageError(
                    "PrefectDbtOrchestrator.run_build with ExecutionMode.PER_NODE must be called inside a Prefect flow "
                    "(its nodes are tasks); call it from a @flow, or use ExecutionMode.PER_WAVE"
                )
            started = time.time()
            prepared = self._prepare(select, exclude, full_refresh, only_fresh_sources, target, extra_cli_args, vars)
            graph, catalog = prepared.plan, prepared.catalog
            self.last_plan = graph
            if not graph.nodes:
                # As dbt build with an empty selection: its warning, and no project hook runs.
                current_run_logger().warning(NOTHING_TO_DO)
                graph.hook_types = ()
            hooks = InvocationHooks(self.hooks, self, "build", prepared.request.build_args) if self.hooks else None
            if hooks is not None:
                hooks.start(prepared.hook_selection, lambda: catalog.manifest)
            _logger.info(
                "Orchestrating %d dbt nodes %s (tests: %s)",
                len(graph.nodes),
                "per wave" if self.execution_mode is ExecutionMode.PER_WAVE else "per node",
                self.test_strategy.value,
            )
            if self.execution_mode is ExecutionMode.PER_WAVE:
                results, hook_results = self._run_per_wave(prepared, hooks)
            else:
                results, hook_results = self._run_per_node(prepared, hooks, flow_ctx)
            outcome = BuildResult(success=True, results=results, hook_results=hook_results)
            if hooks is not None:
                # As dbt's run results: the nodes, then the project's own hooks.
                hooks.finish(outcome, [*outcome.results, *outcome.hook_results])
            if self.write_run_results:
                write_build_run_results(prepared, Path(self.settings.target_path), outcome, time.time() - started)
            counts: dict[str, int] = {}
            for status in (r["status"] for r in outcome.values()):
                counts[status] = counts.get(status, 0) + 1
            logger = current_run_logger()
            logger.info(
                "Finished the orchestrated dbt build of %d nodes in %.1f s: %s",
                len(outcome),
                time.time() - started,
                ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to do",
            )
            if graph.nodes:
                # dbt's closing line for the whole build, as one `dbt build` would print it.
                every = [r.status for r in (*outcome.hook_results, *outcome.results)]
                logger.info("Done. %s", summary_line(summary_counts(every)))
            if in_flow:
                # As the runner: the build's log lines are on the server when the call returns.
                flush_events_and_logs(min(self.record_timeout_seconds, 10.0))
            if not outcome.success and self.raise_on_failure:
                lines = failure_lines(outcome.failed_results, None, "")
                summary = "Failures detected during invocation of dbt command 'build':\n" + "\n".join(lines)
                raise DbtBuildFailed(dict(outcome), summary if lines else "")
            return outcome

    # -- preparation -------------------------------------------------------------------
    def _prepare(
        self,
        select: Any,
        exclude: Any,
        full_refresh: bool,
        only_fresh_sources: bool,
        target: str | None,
        extra_cli_args: Sequence[str] | None,
        vars: dict[str, Any] | None,
    ) -> PreparedBuild:
        extra, vars_text = take_vars(validate_extra_cli_args(extra_cli_args), vars)
        project_dir = Path(self.settings.project_dir).expanduser().resolve()
        check_project(project_dir)
        request = BuildRequest(
            project_dir=project_dir,
            select=select,
            exclude=exclude,
            full_refresh=full_refresh,
            target=target,
            vars_text=vars_text,
            state_args=tuple(self._state_args()),
            extra_args=tuple(extra),
            threads=self.threads,
            only_fresh_sources=only_fresh_sources,
            manifest_path=self.manifest_path,
        )
        options = BuildOptions(
            self.settings, self.test_strategy.value, self.ship_project, self.translator, self.hooks.selectors
        )
        return prepare_build(options, request)

    def _state_args(self) -> list[str]:
        args: list[str] = []
        if self.state_path is not None:
            args += ["--state", str(self.state_path)]
        if self.defer:
            args.append("--defer")
        if self.defer_state_path is not None:
            args += ["--defer-state", str(self.defer_state_path)]
        if self.favor_state:
            args.append("--favor-state")
        return args

    # -- execution ---------------------------------------------------------------------
    def _run_per_wave(
        self, prepared: PreparedBuild, hooks: InvocationHooks | None
    ) -> tuple[list[NodeResult], list[NodeResult]]:
        request = prepared.request
        options = WaveOptions(
            project_dir=request.project_dir,
            profiles_dir=Path(self.settings.profiles_dir).expanduser(),
            dbt_args=request.wave_args(),
            dbt_level=prepared.spec.log_level,
            include_compiled_code=self.include_compiled_code,
            disable_assets=self.disable_assets,
            create_summary_artifact=self.create_summary_artifact,
            record_timeout_seconds=self.record_timeout_seconds,
            build_args=request.build_args,
        )
        build = run_waves(
            prepared.plan, prepared.catalog, options, hooks, self.settings.given_target_path, dict(prepared.stale)
        )
        hook_results: list[NodeResult] = []
        if build.end_hooks_pending:
            # Failures left nothing to run in the last wave, so no dbt invocation ran the
            # project's on-run-end hooks: they run in a task of their own, with the build's results.
            state = dbt_hooks.with_options(name="on-run-end", task_run_name="on-run-end")(
                spec=prepared.spec,
                hook_type="on-run-end",
                # Plain outcomes: the results carry dbt's node objects, which the task need not walk.
                upstream=[NodeOutcome(r.unique_id, r.status, r.message, r.execution_time) for r in build.results],
                upstream_ids=[r.unique_id for r in build.results],
                return_state=True,
            )
            hook_results += hook_results_of("on-run-end", state, state.state_details.task_run_id)
        return build.results, [*build.hook_results, *hook_results]

    def _run_per_node(
        self, prepared: PreparedBuild, hooks: InvocationHooks | None, flow_ctx: Any
    ) -> tuple[list[NodeResult], list[NodeResult]]:
        check_concurrency_limit(self.concurrency)
        graph, catalog = prepared.plan, prepared.catalog
        skipped = self._record_stale(prepared, graph, catalog)
        runnable = NodeGraph(
            [n for n in graph.nodes if n.unique_id not in prepared.stale], graph.hook_types, graph.test_strategy
        )
        task_runner = node_task_runner(catalog, self.concurrency, self.task_runner_type, flow_ctx.task_runner)
        in_flow_process = runs_in_flow_process(catalog)
        # A name: slots of that Prefect limit, which the user shares with other flows. A
        # count: the flow caps the node tasks in flight itself (or the task runner's
        # max_workers does), which costs nothing per node; on DuckDB, one at a time already.
        named_limit = self.concurrency if isinstance(self.concurrency, str) and not in_flow_process else None
        cap = self.concurrency if isinstance(self.concurrency, int) and task_runner is None else None
        cache: BuildCache | None = None
        node_options = NodeOptions(
            concurrency_limit=named_limit,
            include_compiled_code=self.include_compiled_code,
            disable_assets=self.disable_assets,
            build_id=uuid.uuid4().hex,
        )
        build = PerNodeBuild(
            runnable,
            prepared.spec,
            catalog,
            node_options,
            self.retries,
            self.retry_delay_seconds,
            self.record_timeout_seconds,
            task_runner,
            max_in_flight=cap,
        )
        with task_runner if task_runner is not None else nullcontext():
            if self.cache is not None:
                cache, cached = self._answer_from_cache(prepared, build)
                skipped += cached
            done = build.run(hooks, flow_ctx.task_runner)
        if cache is not None:
            wait_until_recorded(
                [r.task_run_id for r in skipped if r.cached and r.task_run_id], [], self.record_timeout_seconds
            )
            cache.save(done.results)
        results = {r.unique_id: r for r in [*done.results, *skipped]}
        ordered = [results[n.unique_id] for n in graph.nodes if n.unique_id in results]
        if self.create_summary_artifact:
            publish_node_build_report(prepared, ordered, done.hook_results, with_asset_keys=not self.disable_assets)
        return ordered, done.hook_results

    def _cache_decisions(self, prepared: PreparedBuild) -> BuildCache:
        request = prepared.request
        assert self.cache is not None, "only called with caching configured"
        cache = BuildCache.open(
            self.cache, prepared.catalog.manifest, request.project_dir, request.vars_text, request.full_refresh
        )
        logger = current_run_logger()
        with dbt_args(self.settings, request) as args:
            cache.read_versions(prepared.plan, args, logger)
        cache.decide(prepared.plan)
        cache.log_decisions(logger)
        return cache

    def _answer_from_cache(self, prepared: PreparedBuild, build: PerNodeBuild) -> tuple[BuildCache, list[NodeResult]]:
        """After the on-run-start hooks (which may load sources): record the hits as Cached task
        runs and leave them out of the build."""
        start_hooks = build.start()
        if start_hooks is not None:
            start_hooks.wait()
        target = RunTarget.current()
        cache = self._cache_decisions(prepared)
        hits = {u for u, d in cache.decisions.items() if d.prediction == HIT}
        build.graph = NodeGraph(
            [n for n in build.graph.nodes if n.unique_id not in hits], build.graph.hook_types, build.graph.test_strategy
        )
        if not hits:
            return cache, []
        recorder = RunRecorder(target=target, catalog=prepared.catalog, threshold=logging.INFO)
        cached = [
            NodeResult.from_cache(
                recorder.record_not_run(
                    node_of(prepared.catalog, n.unique_id), CACHED, cache.decisions[n.unique_id].reason
                )
            )
            for n in prepared.plan.nodes
            if n.unique_id in hits
        ]
        # Read back with the build's own task runs, at its end: the server records these meanwhile.
        return cache, cached

    def _record_stale(self, prepared: PreparedBuild, graph: NodeGraph, catalog: NodeCatalog) -> list[NodeResult]:
        """Skipped task runs for the nodes downstream of a stale source (only_fresh_sources)."""
        if not prepared.stale:
            return []
        recorder = RunRecorder(target=RunTarget.current(), catalog=catalog, threshold=logging.INFO)
        skipped = []
        for planned in graph.nodes:
            reason = prepared.stale.get(planned.unique_id)
            if reason is None:
                continue
            done = recorder.record_not_run(node_of(catalog, planned.unique_id), SKIPPED, reason)
            skipped.append(NodeResult.not_run(done))
        wait_until_recorded(recorder.task_run_ids, [], self.record_timeout_seconds)
        return skipped


@contextmanager
def _database_released() -> Iterator[None]:
    """When a build or plan ends, however it ends, no connection of this process holds
    the database, as when the dbt CLI's process exits: the warm sessions in the flow's
    process disconnect (they stay warm otherwise) and the DuckDB file is released."""
    try:
        yield
    finally:
        with DBT_INVOCATION_LOCK:
            close_connections()
            release_duckdb_file()
