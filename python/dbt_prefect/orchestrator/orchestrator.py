"""PrefectDbtOrchestrator: each dbt node a real Prefect task, on the flow's task runner.

Planning happens once, in the flow (preparation.py): dbt parses the project and resolves
select/exclude itself (``dbt ls`` on the parsed manifest), and plan.py turns that into the
DAG of nodes to run. Every node is then submitted to the flow's task runner with
``wait_for`` on its upstream nodes, so a node starts as soon as its parents finish. The
project's on-run-start and on-run-end hooks run in one task each, before and after.

On the worker (worker.py, warm_project.py) a node costs its SQL: each worker process
keeps a warm dbt session per project, set up by the first node it runs. Task-run names,
states, logs, assets and the failure summary come from the same code as the runner's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.futures import as_completed, wait
from prefect.logging import get_run_logger

from dbt_prefect.errors import OrchestratorUsageError
from dbt_prefect.model.nodes import NodeCatalog
from dbt_prefect.model.statuses import ERROR, SUCCESS, is_failure
from dbt_prefect.model.translator import DbtPrefectTranslator
from dbt_prefect.orchestrator.concurrency import check_concurrency_limit, concurrency_limit
from dbt_prefect.orchestrator.plan import TEST_STRATEGIES, BuildPlan
from dbt_prefect.orchestrator.preparation import BuildOptions, prepare_build
from dbt_prefect.orchestrator.results import AllowFailure, BuildResult, HookRecord, NodeResult
from dbt_prefect.orchestrator.warm_project import ProjectSpec
from dbt_prefect.orchestrator.worker import NodeOptions, NodeOutcome, flush_prefect, run_hooks, run_node
from dbt_prefect.runner.failures import summarise_failures
from dbt_prefect.runner.hooks import HookRegistration, InvocationHooks, LifecycleHooks
from dbt_prefect.runner.invocation import check_project
from dbt_prefect.runner.readback import wait_until_recorded
from dbt_prefect.settings import PrefectDbtSettings

_logger = logging.getLogger("dbt_prefect")


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


class PrefectDbtOrchestrator(HookRegistration):
    """Run ``dbt build`` node by node, each node a Prefect task on the flow's task runner.

    Call ``run_build`` inside a flow. The flow's task runner decides where nodes run:
    ThreadPoolTaskRunner (nodes take turns in the flow's process: dbt is not thread-safe),
    ProcessPoolTaskRunner (parallel local processes), or prefect-dask's DaskTaskRunner for
    parallel worker processes, local or remote. Each process keeps a warm dbt session.
    """

    def __init__(
        self,
        settings: PrefectDbtSettings | None = None,
        retries: int = 0,
        retry_delay_seconds: float | list[float] = 0,
        concurrency: int | str | None = None,
        test_strategy: str = "immediate",
        raise_on_failure: bool = True,
        include_compiled_code: bool = False,
        disable_assets: bool = False,
        ship_project: bool = False,
        record_timeout_seconds: float = 60.0,
        translator: DbtPrefectTranslator | None = None,
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
        self.translator = translator if translator is not None else DbtPrefectTranslator()
        self.last_plan: BuildPlan | None = None
        # Lifecycle hooks (@orchestrator.on_run_start, .post_model, .on_run_end), as the runner's.
        self.hooks = LifecycleHooks()

    # -- public ----------------------------------------------------------------------
    def run_build(
        self,
        select: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        full_refresh: bool = False,
        target: str | None = None,
        vars: dict[str, Any] | None = None,
    ) -> BuildResult:
        """Plan the build, run every node as a task, wait for all of them; return the results."""
        flow_ctx = FlowRunContext.get()
        if flow_ctx is None or flow_ctx.flow_run is None:
            raise OrchestratorUsageError(
                "PrefectDbtOrchestrator.run_build must be called inside a Prefect flow "
                "(its nodes are tasks on the flow's task runner); use PrefectDbtRunner outside flows"
            )
        project_dir = Path(self.settings.project_dir).expanduser().resolve()
        check_project(project_dir)
        vars_text = json.dumps(vars, sort_keys=True) if vars else None
        started = time.time()

        check_concurrency_limit(self.concurrency)
        options = BuildOptions(
            self.settings, self.test_strategy, self.ship_project, self.translator, self.hooks.selectors
        )
        prepared = prepare_build(options, project_dir, select, exclude, full_refresh, target, vars_text)
        spec, plan, catalog = prepared.spec, prepared.plan, prepared.catalog
        self.last_plan = plan
        hooks = InvocationHooks(self.hooks, self, "build", _build_args(select, exclude, full_refresh, target))
        hooks.start(prepared.hook_selection, lambda: catalog.manifest)
        flow_logger = get_run_logger()
        flow_logger.info(
            "Orchestrating %d dbt nodes on %s (tests: %s)",
            len(plan.nodes),
            type(flow_ctx.task_runner).__name__,
            self.test_strategy,
        )
        with concurrency_limit(self.concurrency, flow_ctx.flow_run.id) as limit_name:
            node_options = NodeOptions(
                concurrency_limit=limit_name,
                include_compiled_code=self.include_compiled_code,
                disable_assets=self.disable_assets,
                build_id=uuid.uuid4().hex,
            )
            hook_futures: dict[str, Any] = {}
            if "on-run-start" in plan.hook_types:
                hook_futures["on-run-start"] = self._submit_hooks(spec, "on-run-start", {})
            futures = self._submit(plan, spec, node_options, hook_futures.get("on-run-start"))
            if "on-run-end" in plan.hook_types:
                hook_futures["on-run-end"] = self._submit_hooks(spec, "on-run-end", futures)
            if self.hooks.post_model:
                self._post_model_hooks(hooks, plan, futures, catalog)
            wait([*futures.values(), *hook_futures.values()])
        result = self._collect(plan, futures, catalog)
        result.hook_results = [self._hook_result(name, future) for name, future in hook_futures.items()]
        result.success = result.success and not result.failed_results
        self._wait_until_recorded(flow_ctx.task_runner, {**futures, **hook_futures}, result)
        hooks.finish(result, result.results)
        counts: dict[str, int] = {}
        for r in result.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        flow_logger.info(
            "Finished the orchestrated dbt build of %d nodes in %.1f s: %s",
            len(result.results),
            time.time() - started,
            ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to do",
        )
        if not result.success and self.raise_on_failure:
            failure = summarise_failures("build", BuildResult(success=False, results=result.failed_results))
            if failure is not None:
                raise failure
        return result

    @staticmethod
    def _post_model_hooks(
        hooks: InvocationHooks, plan: BuildPlan, futures: dict[str, Any], catalog: NodeCatalog
    ) -> None:
        """Queue the post_model hooks of each model as its task finishes, in the flow's process."""
        models = {futures[n.unique_id].task_run_id: n.unique_id for n in plan.nodes if n.resource_type == "model"}
        for future in as_completed([futures[unique_id] for unique_id in models.values()]):
            future.wait()  # as_completed may learn of the end from the server; the outcome is the runner's
            outcome = _outcome_of(future, models[future.task_run_id])
            entry = catalog.manifest_entry(outcome.unique_id)
            hooks.node_finished(entry, outcome.status, outcome.message, partial(dataclasses.asdict, outcome))

    # -- execution -------------------------------------------------------------------
    def _submit_hooks(self, spec: ProjectSpec, hook_type: str, after: dict[str, Any]) -> Any:
        """One task for the hooks of one type; on-run-end runs after every node and sees their results."""
        upstream_ids = list(after)
        return dbt_hooks.with_options(name=hook_type, task_run_name=hook_type).submit(
            spec=spec,
            hook_type=hook_type,
            upstream=[AllowFailure(after[u]) for u in upstream_ids],
            upstream_ids=upstream_ids,
        )

    @staticmethod
    def _hook_result(hook_type: str, future: Any) -> NodeResult:
        state = future.state
        return NodeResult(
            unique_id=HookRecord(hook_type).unique_id,
            node=HookRecord(hook_type),
            status=ERROR if state.is_failed() or state.is_crashed() else SUCCESS,
            message=str(state.message or ""),
            task_run_id=future.task_run_id,
        )

    def _submit(
        self, plan: BuildPlan, spec: ProjectSpec, options: NodeOptions, start_hooks: Any | None = None
    ) -> dict[str, Any]:
        allow_failure = AllowFailure
        futures: dict[str, Any] = {}
        for planned in plan.nodes:
            node_task = dbt_node.with_options(
                name=planned.task_run_name,
                task_run_name=planned.task_run_name,
                retries=self.retries,
                retry_delay_seconds=self.retry_delay_seconds,
            )
            upstream_ids = list(planned.parents)
            # Prefect's overloads of submit() do not combine the task's parameters with wait_for.
            futures[planned.unique_id] = node_task.submit(  # type: ignore[call-overload]
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

    def _collect(self, plan: BuildPlan, futures: dict[str, Any], catalog: NodeCatalog) -> BuildResult:
        results: list[NodeResult] = []
        for planned in plan.nodes:
            future = futures[planned.unique_id]
            outcome = _outcome_of(future, planned.unique_id)
            fields = {f.name: getattr(outcome, f.name) for f in dataclasses.fields(NodeOutcome)}
            results.append(NodeResult(**fields, node=catalog.get(planned.unique_id), task_run_id=future.task_run_id))
        success = not any(is_failure(r.status) for r in results)
        return BuildResult(success=success, results=results)

    def _wait_until_recorded(self, task_runner: Any, futures: dict[str, Any], result: BuildResult) -> None:
        """Every task run terminal and every asset event stored on the server, as the runner promises."""
        client = _dask_client(task_runner)
        if client is not None:
            try:
                client.run(flush_prefect, self.record_timeout_seconds)
            except Exception as exc:
                _logger.debug("could not flush Prefect events on the Dask workers: %s", exc)
        task_run_ids = [f.task_run_id for f in futures.values()]
        event_ids = [e for r in result.results for e in r.asset_event_ids]
        wait_until_recorded(task_run_ids, event_ids, self.record_timeout_seconds)


def _outcome_of(future: Any, unique_id: str = "") -> NodeOutcome:
    """What a node task reported; a task that died or whose result cannot be read is an error."""
    state = future.state
    outcome: Any = None
    try:
        outcome = state.result(raise_on_failure=False)
    except Exception as exc:  # a worker that died, a result that cannot be read
        outcome = exc
    if isinstance(outcome, NodeOutcome):
        return outcome
    message = str(state.message or outcome or "the node task did not finish")
    return NodeOutcome(unique_id=unique_id, status=ERROR, message=message)


def _build_args(select: Any, exclude: Any, full_refresh: bool, target: str | None) -> tuple[str, ...]:
    """The dbt command line the build stands for, as hooks see it in ``ctx.args``."""
    args = ["build"]
    for flag, value in (("--select", select), ("--exclude", exclude)):
        if value:
            args += [flag, *([value] if isinstance(value, str) else list(value))]
    if full_refresh:
        args.append("--full-refresh")
    if target:
        args += ["--target", target]
    return tuple(args)


def _dask_client(task_runner: Any) -> Any:
    """The distributed.Client of a prefect-dask DaskTaskRunner, else None."""
    if type(task_runner).__name__ != "DaskTaskRunner":
        return None
    try:
        return task_runner.client
    except Exception:
        return None
