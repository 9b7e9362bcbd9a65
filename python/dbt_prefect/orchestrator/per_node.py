"""PER_NODE execution: each dbt node a Prefect task on a task runner.

Every node is submitted with ``wait_for`` on what it waits for in the plan, so a node
starts as soon as its parents finish. The project's on-run-start and on-run-end hooks
run in one task each, before and after. On the worker (worker.py, warm_project.py) a
node costs its SQL: each worker process keeps a warm dbt session per project.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import queue
import threading
from dataclasses import dataclass
from functools import partial
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait

from dbt_prefect.model.nodes import NodeCatalog
from dbt_prefect.model.statuses import ERROR, SUCCESS, classify, is_failure
from dbt_prefect.orchestrator.lost_workers import forget_executions
from dbt_prefect.orchestrator.plan import NodeGraph
from dbt_prefect.orchestrator.results import AllowFailure, HookRecord, NodeResult
from dbt_prefect.orchestrator.warm_project import ProjectSpec
from dbt_prefect.orchestrator.worker import NodeOptions, NodeOutcome, flush_prefect, node_selector, run_hooks, run_node
from dbt_prefect.runner.hooks import InvocationHooks
from dbt_prefect.runner.readback import wait_until_recorded
from dbt_prefect.runner.target import current_run_logger

_logger = logging.getLogger("dbt_prefect")


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


@dataclass
class NodeBuild:
    results: list[NodeResult]
    hook_results: list[NodeResult]


@dataclass
class PerNodeBuild:
    """One orchestrated build's nodes, submitted to ``submitter`` (a task runner, or None
    for the flow's own)."""

    graph: NodeGraph
    spec: ProjectSpec
    catalog: NodeCatalog
    options: NodeOptions
    retries: int
    retry_delay_seconds: Any
    record_timeout_seconds: float
    task_runner: Any = None  # a started task runner of task_runner_type, else the flow's
    # concurrency=N: at most N node tasks submitted and unfinished at once (None: no cap).
    max_in_flight: int | None = None
    _start_hooks: Any = None

    def start(self) -> Any | None:
        """Submit the project's on-run-start hooks now (the cache reads sources after them); their future."""
        if "on-run-start" in self.graph.hook_types and self._start_hooks is None:
            self._start_hooks = self._submit_hooks("on-run-start", {})
        return self._start_hooks

    def run(self, hooks: InvocationHooks | None, flow_task_runner: Any) -> NodeBuild:
        graph = self.graph
        hook_futures: dict[str, Any] = {}
        start_hooks = self.start()
        if start_hooks is not None:
            hook_futures["on-run-start"] = start_hooks
        post_model = _PostModelHooks(hooks, self.catalog) if hooks and hooks.has_post_model else None
        if self.max_in_flight is None:
            futures = self._submit(start_hooks, post_model)
        else:
            futures = self._submit_capped(start_hooks, post_model, self.max_in_flight)
        if "on-run-end" in graph.hook_types:
            hook_futures["on-run-end"] = self._submit_hooks("on-run-end", futures)
        wait([*futures.values(), *hook_futures.values()])
        if post_model is not None:
            post_model.fire_the_rest()
        results = self._collect(futures)
        hook_results = [
            r for name, future in hook_futures.items() for r in hook_results_of(name, future.state, future.task_run_id)
        ]
        self._wait_until_recorded(self.task_runner or flow_task_runner, {**futures, **hook_futures}, results)
        return NodeBuild(results, hook_results)

    def _submit_task(self, node_task: Any, parameters: dict[str, Any], wait_for: list[Any]) -> Any:
        if self.task_runner is None:
            return node_task.submit(**parameters, wait_for=wait_for)
        return self.task_runner.submit(node_task, parameters=parameters, wait_for=wait_for)

    def _submit_hooks(self, hook_type: str, after: dict[str, Any]) -> Any:
        """One task for the hooks of one type; on-run-end runs after every node and sees their results."""
        upstream_ids = list(after)
        hook_task = dbt_hooks.with_options(name=hook_type, task_run_name=hook_type)
        parameters = {
            "spec": self.spec,
            "hook_type": hook_type,
            "upstream": [AllowFailure(after[u]) for u in upstream_ids],
            "upstream_ids": upstream_ids,
        }
        return self._submit_task(hook_task, parameters, [])

    def _submit(self, start_hooks: Any | None, post_model: _PostModelHooks | None) -> dict[str, Any]:
        """Every node at once, each waiting for what it waits for in the plan (eager scheduling)."""
        futures: dict[str, Any] = {}
        for planned in self.graph.nodes:
            futures[planned.unique_id] = self._submit_node(planned, futures, start_hooks, post_model)
        return futures

    def _submit_capped(self, start_hooks: Any | None, post_model: _PostModelHooks | None, limit: int) -> dict[str, Any]:
        """concurrency=N: a node is submitted once what it waits for has finished and fewer
        than N node tasks are unfinished; returns when every node task has finished.

        This caps the nodes in flight in the flow itself, at no cost per node. A Prefect
        concurrency limit for the build would cost each node a slot: three API calls, two
        events, and a wait until the server sees the slot free again (0.9 s a node more,
        measured on PostgreSQL with 200 models: benchmarks/RESULTS.md). A done callback
        says when a task finished; should one never come, the in-flight futures are
        asked directly after a second, so the build cannot stall."""
        nodes = self.graph.by_id()
        order = {uid: index for index, uid in enumerate(nodes)}
        waiting = {uid: {w for w in n.waits_for if w in nodes} for uid, n in nodes.items()}
        children: dict[str, list[str]] = {}
        for uid, parents in waiting.items():
            for parent in parents:
                children.setdefault(parent, []).append(uid)
        ready = [(order[uid], uid) for uid, parents in waiting.items() if not parents]
        heapq.heapify(ready)
        finished: queue.SimpleQueue[str] = queue.SimpleQueue()
        futures: dict[str, Any] = {}
        in_flight: dict[str, Any] = {}
        while ready or in_flight:
            while ready and len(in_flight) < limit:
                _, unique_id = heapq.heappop(ready)
                future = self._submit_node(nodes[unique_id], futures, start_hooks, post_model)
                futures[unique_id] = in_flight[unique_id] = future
                future.add_done_callback(lambda _, uid=unique_id: finished.put(uid))
            try:
                done = [finished.get(timeout=1.0)]
            except queue.Empty:
                done = [uid for uid, future in in_flight.items() if _has_finished(future)]
            while not finished.empty():
                done.append(finished.get_nowait())
            for unique_id in done:
                if in_flight.pop(unique_id, None) is None:
                    continue  # already counted (its callback came after a direct check)
                for child in children.get(unique_id, ()):
                    waiting[child].discard(unique_id)
                    if not waiting[child]:
                        heapq.heappush(ready, (order[child], child))
        return futures

    def _submit_node(
        self, planned: Any, futures: dict[str, Any], start_hooks: Any | None, post_model: _PostModelHooks | None
    ) -> Any:
        node_task = dbt_node.with_options(
            name=planned.task_run_name,
            task_run_name=planned.task_run_name,
            retries=self.retries,
            retry_delay_seconds=self.retry_delay_seconds,
        )
        # A parent that is not in this build (the cache answered for it) has nothing to wait for.
        upstream_ids = [p for p in planned.parents if p in futures]
        parameters = {
            "spec": self.spec,
            "unique_id": planned.unique_id,
            # allow_failure: a child runs (and records Skipped) when a parent failed.
            "upstream": [AllowFailure(futures[p]) for p in upstream_ids],
            "upstream_ids": upstream_ids,
            "options": self.options,
        }
        wait_for = [AllowFailure(futures[w]) for w in planned.waits_for if w in futures]
        # Every node waits for on-run-start, through its parents or itself.
        if start_hooks is not None and not wait_for:
            wait_for.append(AllowFailure(start_hooks))
        future = self._submit_task(node_task, parameters, wait_for)
        if post_model is not None and planned.resource_type == "model":
            post_model.watch(future, planned.unique_id)
        return future

    def _collect(self, futures: dict[str, Any]) -> list[NodeResult]:
        results: list[NodeResult] = []
        outcomes: dict[str, NodeOutcome] = {}
        failed_upstream: dict[str, tuple[str, ...]] = {}
        for planned in self.graph.nodes:  # topological: parents first
            future = futures[planned.unique_id]
            outcome = outcomes[planned.unique_id] = outcome_of(future, planned.unique_id)
            skipped = classify(outcome.status).skipped
            if skipped:
                failed_upstream[planned.unique_id] = _failed_upstream(planned.parents, outcomes, failed_upstream)
            fields = {f.name: getattr(outcome, f.name) for f in dataclasses.fields(NodeOutcome)}
            entry = self.catalog.manifest_entry(planned.unique_id)
            invocation = {"command": "build", "args": [node_selector(entry)]} if entry is not None else None
            results.append(
                NodeResult(
                    **fields,
                    node=self.catalog.get(planned.unique_id),
                    task_run_id=future.task_run_id,
                    invocation=invocation,
                    reason=outcome.message if skipped else None,
                    failed_upstream=failed_upstream.get(planned.unique_id, ()),
                )
            )
        return results

    def _wait_until_recorded(self, task_runner: Any, futures: dict[str, Any], results: list[NodeResult]) -> None:
        """Every task run terminal and every asset event stored on the server, as the runner promises."""
        client = _dask_client(task_runner)
        task_run_ids = [f.task_run_id for f in futures.values()]
        if client is not None:
            try:
                client.run(flush_prefect, self.record_timeout_seconds)
            except Exception:  # a worker that died has nothing left to flush
                pass
            forget_executions(client, task_run_ids)
        event_ids = [e for r in results for e in r.asset_event_ids]
        wait_until_recorded(task_run_ids, event_ids, self.record_timeout_seconds)


class _PostModelHooks:
    """The post_model hooks of a per-node build, queued in the flow's process as each
    model's task finishes (a done callback of its future).

    A task runner may lose a done callback (a Dask client that reconnects, say), and
    nothing may then hang or stay unfired: the build waits for its tasks itself, and
    ``fire_the_rest`` queues the hooks of every model whose callback has not come."""

    def __init__(self, hooks: InvocationHooks, catalog: NodeCatalog) -> None:
        self.hooks = hooks
        self.catalog = catalog
        self.models: dict[Any, str] = {}
        self.futures: list[Any] = []
        self.fired: set[Any] = set()
        self.lock = threading.Lock()

    def watch(self, future: Any, unique_id: str) -> None:
        self.models[future.task_run_id] = unique_id
        self.futures.append(future)
        future.add_done_callback(self.fire)

    def fire(self, future: Any) -> None:
        try:
            with self.lock:
                if future.task_run_id in self.fired:
                    return
                self.fired.add(future.task_run_id)
            future.wait()  # the task runner's own outcome, not the server's view of it
            outcome = outcome_of(future, self.models[future.task_run_id])
            entry = self.catalog.manifest_entry(outcome.unique_id)
            self.hooks.node_finished(entry, outcome.status, outcome.message, partial(dataclasses.asdict, outcome))
        except Exception as exc:  # on the task runner's thread: never raise there
            _logger.warning("dbt-prefect could not queue the post_model hooks of a model: %s", exc)

    def fire_the_rest(self) -> None:
        for future in self.futures:
            self.fire(future)


def _has_finished(future: Any) -> bool:
    future.wait(timeout=0)  # the task runner's own answer, when it has one
    return bool(future.state.is_final())


def _failed_upstream(
    parents: tuple[str, ...], outcomes: dict[str, NodeOutcome], known: dict[str, tuple[str, ...]]
) -> tuple[str, ...]:
    """The failed nodes a skipped node traces back to: failed parents, and those its
    skipped parents trace back to."""
    found: dict[str, None] = {}
    for parent in parents:
        if parent not in outcomes:  # answered by the cache, not run
            continue
        if is_failure(outcomes[parent].status):
            found[parent] = None
        found.update(dict.fromkeys(known.get(parent, ())))
    return tuple(found)


def hook_results_of(hook_type: str, state: Any, task_run_id: Any) -> list[NodeResult]:
    """The results of a hook task (its final state): one per project hook it ran, under
    dbt's id for the hook; one for the task when it could not run them."""
    try:
        ran = state.result(raise_on_failure=False)
    except Exception:  # a worker that died, a result that cannot be read
        ran = None
    if isinstance(ran, list) and ran and all(isinstance(r, NodeOutcome) for r in ran):
        return [
            NodeResult(
                unique_id=r.unique_id,
                node=HookRecord(r.unique_id.split(".", 2)[-1]),
                status=r.status,
                message=r.message,
                execution_time=r.execution_time,
                task_run_id=task_run_id,
            )
            for r in ran
        ]
    return [
        NodeResult(
            unique_id=HookRecord(hook_type).unique_id,
            node=HookRecord(hook_type),
            status=ERROR if state.is_failed() or state.is_crashed() else SUCCESS,
            message=str(state.message or ""),
            task_run_id=task_run_id,
        )
    ]


def outcome_of(future: Any, unique_id: str = "") -> NodeOutcome:
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


def _dask_client(task_runner: Any) -> Any:
    """The distributed.Client of a prefect-dask DaskTaskRunner, else None."""
    if type(task_runner).__name__ != "DaskTaskRunner":
        return None
    try:
        return task_runner.client
    except Exception:
        return None


def runs_in_flow_process(catalog: NodeCatalog) -> bool:
    """DuckDB allows one writing process per database file: its nodes take turns in the
    flow's process, where they share one database instance."""
    return catalog.adapter_type == "duckdb"


def node_task_runner(catalog: NodeCatalog, concurrency: Any, task_runner_type: Any, flow_task_runner: Any) -> Any:
    """The task runner for the node tasks, when not the flow's own."""
    if runs_in_flow_process(catalog):
        from prefect.task_runners import ThreadPoolTaskRunner

        ignored = []
        if concurrency not in (None, 1):
            ignored.append(f"concurrency={concurrency!r}")
        if task_runner_type is not None:
            ignored.append(f"task_runner_type={getattr(task_runner_type, '__name__', task_runner_type)}")
        if flow_task_runner is not None and not isinstance(flow_task_runner, ThreadPoolTaskRunner):
            ignored.append(f"the flow's {type(flow_task_runner).__name__}")
        if ignored:
            current_run_logger().warning(
                "dbt-prefect runs the nodes of this DuckDB project one at a time in the flow's process: "
                "DuckDB allows one writing process per database file, so %s do%s not apply",
                " and ".join(ignored),
                "es" if len(ignored) == 1 else "",
            )
        return ThreadPoolTaskRunner(max_workers=1)
    if task_runner_type is None:
        return None
    if isinstance(concurrency, int):
        return task_runner_type(max_workers=concurrency)
    return task_runner_type()
