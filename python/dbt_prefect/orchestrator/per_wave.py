"""PER_WAVE execution: one ``dbt build`` per wave of the plan, in the flow's process.

Each wave is one dbtRunner invocation on the manifest parsed once for the build, with
the wave's nodes selected exactly (``--indirect-selection empty``: the test strategy has
placed the tests). One RunRecorder serves the whole build, as it serves one runner
invoke: every node dbt runs becomes its task run, with its logs, state and assets, and
the run report covers the build.

Between waves the orchestrator decides what dbt would: a node whose parent failed or was
skipped does not go to dbt; it gets its Skipped task run here, with the reason. Only
the failed nodes' descendants are skipped, as in ``dbt build`` (the official per-wave
mode skips every later wave once anything failed).

The project's on-run-start hooks run with the first wave that runs and its on-run-end
hooks with the last wave, so each runs once per build, as in ``dbt build``: the waves
get a manifest without the hooks they must not run. When failures leave nothing to run
in the last wave, the on-run-end hooks run in a task of their own (worker.run_hooks).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from dbt.cli.main import dbtRunner

from dbt_prefect._compat.dbt import WaveSelectors, wave_builds_on
from dbt_prefect.delivery import deliver, open_outbox, routed
from dbt_prefect.model.levels import python_level
from dbt_prefect.model.nodes import DbtNode, NodeCatalog
from dbt_prefect.model.statuses import ERROR, SKIPPED, classify, skip_reason
from dbt_prefect.orchestrator.plan import NodeGraph, PlannedNode
from dbt_prefect.orchestrator.results import HookRecord, NodeResult
from dbt_prefect.orchestrator.worker import node_selector
from dbt_prefect.profiles.resolve import resolved_profiles
from dbt_prefect.runner.asset_events import AssetEmitter
from dbt_prefect.runner.events import DbtEventRouter
from dbt_prefect.runner.failures import node_results, result_message
from dbt_prefect.runner.heap import long_lived_objects_frozen
from dbt_prefect.runner.hooks import InvocationHooks
from dbt_prefect.runner.invocation import DBT_INVOCATION_LOCK, scrubber
from dbt_prefect.runner.readback import wait_until_recorded
from dbt_prefect.runner.recorder import RunRecorder
from dbt_prefect.runner.report.publish import publish_run_report
from dbt_prefect.runner.runner import node_finished_listener
from dbt_prefect.runner.target import RunTarget

_logger = logging.getLogger("dbt_prefect")
_HOOK_TYPES = ("on-run-start", "on-run-end")


@dataclass(frozen=True)
class WaveOptions:
    project_dir: Path
    profiles_dir: Path
    # Everything but the paths and the selection: target, vars, threads, state, extra args.
    dbt_args: tuple[str, ...]
    dbt_level: str
    include_compiled_code: bool
    disable_assets: bool
    create_summary_artifact: bool
    record_timeout_seconds: float
    # The dbt command line the build stands for, for the run report.
    build_args: tuple[str, ...]


@dataclass
class WaveBuild:
    results: list[NodeResult]
    dbt_entries: list[Any]  # dbt's RunResults of every wave, run hooks included
    task_run_ids: list[Any]
    # The project's on-run-start/end hooks dbt ran with the waves.
    hook_results: list[NodeResult]
    # Whether the on-run-end hooks still have to run (nothing ran in the last wave).
    end_hooks_pending: bool


def run_waves(
    graph: NodeGraph,
    catalog: NodeCatalog,
    options: WaveOptions,
    hooks: InvocationHooks | None,
    target_path: Any,
    stale: Mapping[str, str],
) -> WaveBuild:
    """Run the graph wave by wave; ``stale`` maps the nodes skipped before anything runs
    (downstream of a stale source) to their reason."""
    target = RunTarget.current()
    prefect_threshold = logging.getLogger("prefect.flow_runs" if target else "prefect.dbt").getEffectiveLevel()
    threshold = max(python_level(options.dbt_level), prefect_threshold)
    waves = graph.waves(for_dbt_build=True)
    manifest = catalog.manifest
    results: dict[str, NodeResult] = {}
    entries: list[Any] = []
    start_hooks_pending = "on-run-start" in graph.hook_types
    end_hooks_pending = "on-run-end" in graph.hook_types
    outbox = open_outbox(target is not None)
    try:
        with (
            DBT_INVOCATION_LOCK,
            resolved_profiles(options.profiles_dir) as profiles,
            wave_builds_on(manifest) as selectors,
            # The manifest is parsed: it and everything else alive now outlive every wave.
            long_lived_objects_frozen(),
            routed(outbox),
        ):
            scrub = scrubber(profiles.secret_values)
            emitter = None
            if target is not None and not options.disable_assets:
                emitter = AssetEmitter(catalog, include_compiled_code=options.include_compiled_code, scrub=scrub)
            recorder = RunRecorder(
                target=target,
                catalog=catalog,
                threshold=threshold,
                scrub=scrub,
                on_node_finished=node_finished_listener(emitter, hooks, catalog),
            )
            paths = ["--project-dir", str(options.project_dir), "--profiles-dir", str(profiles.profiles_dir)]
            if target_path is not None:
                paths += ["--target-path", str(target_path)]
            for planned in graph.nodes:
                if planned.unique_id in stale:
                    done = recorder.record_not_run(
                        node_of(catalog, planned.unique_id), SKIPPED, stale[planned.unique_id]
                    )
                    results[planned.unique_id] = NodeResult.not_run(done)
            try:
                for number, wave in enumerate(waves):
                    runnable = _runnable(wave, results, catalog, recorder)
                    last = number == len(waves) - 1
                    if not runnable:
                        continue
                    with_hooks = {"on-run-start": start_hooks_pending, "on-run-end": last and end_hooks_pending}
                    start_hooks_pending = False
                    if last:
                        end_hooks_pending = False
                    invocation = {"command": "build", "args": [n.unique_id for n in runnable]}
                    args = [
                        "build",
                        "--select",
                        *(_selector(selectors, catalog.manifest_entry(n.unique_id)) for n in runnable),
                        "--indirect-selection",
                        "empty",
                        # Not per wave: manifest.json, as written by the build's parse, stays; a
                        # run_results.json for the build is written when asked (write_run_results).
                        "--no-write-json",
                        *paths,
                        *options.dbt_args,
                    ]
                    started = time.time()
                    recorder.start()
                    dbt_result: Any = None
                    raised = False
                    try:
                        runner = dbtRunner(manifest=manifest, callbacks=[DbtEventRouter(recorder.forward, threshold)])
                        with _hooks_left_out(manifest, {t for t, keep in with_hooks.items() if not keep}):
                            dbt_result = runner.invoke(args, log_level="none", log_level_file="debug")
                    except BaseException:
                        raised = True
                        raise
                    finally:
                        recorder.stop()
                        raised = raised or getattr(dbt_result, "exception", None) is not None
                        recorder.reconcile(_reported(dbt_result), dbt_raised=raised)
                    exception = getattr(dbt_result, "exception", None)
                    if exception is not None and not isinstance(exception, Exception):
                        raise exception  # an interrupt or cancellation keeps its type
                    wave_entries = node_results(dbt_result)
                    entries += wave_entries
                    by_id = {getattr(getattr(e, "node", None), "unique_id", None): e for e in wave_entries}
                    for planned in runnable:  # in plan order: what a node depends on comes first
                        result = _result_of(
                            planned, by_id.get(planned.unique_id), recorder, catalog, invocation, started, exception
                        )
                        if classify(result.status).skipped:  # dbt skipped it below a failure in this wave
                            stopped = [p for p in planned.parents if p in results and _stops_children(results[p])]
                            result.failed_upstream = _failed_upstream(stopped, results)
                        results[planned.unique_id] = result
            finally:
                if emitter is not None:
                    emitter.release()
    except BaseException:
        try:  # what was recorded still goes out, in bounded time; the exception stands
            deliver(outbox, options.record_timeout_seconds)
        except BaseException:
            pass
        raise
    if target is not None:
        delivered = deliver(outbox, options.record_timeout_seconds)
        if delivered:
            wait_until_recorded(
                recorder.task_run_ids,
                # Delivered events are the server's to store; only task runs are read back.
                emitter.event_ids if emitter is not None and outbox is None else [],
                options.record_timeout_seconds,
                flush=outbox is None,
            )
        if options.create_summary_artifact:
            synthetic = SimpleNamespace(result=SimpleNamespace(results=entries), exception=None)
            publish_run_report(
                recorder,
                command="build",
                args=options.build_args,
                project_dir=options.project_dir,
                with_asset_keys=not options.disable_assets,
                scrub=scrub,
                dbt_result=synthetic,
                publish_to_api=delivered,
            )
    ordered = [results[n.unique_id] for n in graph.nodes if n.unique_id in results]
    return WaveBuild(ordered, entries, list(recorder.task_run_ids), _hook_results(entries), end_hooks_pending)


def _selector(selectors: WaveSelectors, entry: Any) -> str:
    return selectors.fqn_alone(entry) or node_selector(entry)


def _hook_results(entries: Sequence[Any]) -> list[NodeResult]:
    hook_results = []
    for entry in entries:
        node = getattr(entry, "node", None)
        if node is None or str(getattr(node, "resource_type", "")) != "operation":
            continue
        status = str(getattr(entry.status, "value", entry.status))
        record = HookRecord(node.name)
        hook_results.append(
            NodeResult(unique_id=node.unique_id, status=status, message=result_message(entry), node=record)
        )
    return hook_results


def _runnable(
    wave: Sequence[PlannedNode], results: dict[str, NodeResult], catalog: NodeCatalog, recorder: RunRecorder
) -> list[PlannedNode]:
    """The wave's nodes whose parents all succeeded; the others are recorded as skipped."""
    runnable = []
    for planned in wave:
        if planned.unique_id in results:  # skipped before the build (a stale source)
            continue
        stopped = [p for p in planned.parents if p in results and _stops_children(results[p])]
        if not stopped:
            runnable.append(planned)
            continue
        upstream = _failed_upstream(stopped, results)
        node = node_of(catalog, planned.unique_id)
        reason = skip_reason([node_of(catalog, p) for p in stopped], lambda uid: results[uid].status)
        done = recorder.record_not_run(node, SKIPPED, reason)
        results[planned.unique_id] = NodeResult.not_run(done, upstream)
    return runnable


def node_of(catalog: NodeCatalog, unique_id: str) -> DbtNode:
    """The node record of a planned node (the plan comes from this catalog)."""
    node = catalog.get(unique_id)
    if node is None:
        raise KeyError(f"{unique_id} is not in the build's manifest")
    return node


def _stops_children(result: NodeResult) -> bool:
    info = classify(result.status)
    return info.failed or info.skipped


def _failed_upstream(stopped: Sequence[str], results: dict[str, NodeResult]) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for unique_id in stopped:
        result = results[unique_id]
        if classify(result.status).failed:
            found[unique_id] = None
        for upstream in result.failed_upstream:
            found[upstream] = None
    return tuple(found)


def _result_of(
    planned: PlannedNode,
    entry: Any,
    recorder: RunRecorder,
    catalog: NodeCatalog,
    invocation: dict[str, Any],
    started: float,
    exception: BaseException | None,
) -> NodeResult:
    done = recorder.finished.get(planned.unique_id)
    node = node_of(catalog, planned.unique_id)
    task_run_id = done.task_run_id if done is not None else None
    if entry is None:
        message = f"{type(exception).__name__}: {exception}" if exception is not None else "dbt did not run this node"
        return NodeResult(
            unique_id=planned.unique_id,
            status=ERROR,
            message=message,
            node=node,
            task_run_id=task_run_id,
            invocation=invocation,
            started=started,
            finished=time.time(),
        )
    status = str(getattr(entry.status, "value", entry.status))
    timing = {t.name: t for t in (getattr(entry, "timing", None) or [])}
    ran_from = _timestamp(getattr(timing.get("compile"), "started_at", None)) or started
    ran_to = _timestamp(getattr(timing.get("execute"), "completed_at", None)) or time.time()
    message = done.message if done is not None else result_message(entry)
    return NodeResult(
        unique_id=planned.unique_id,
        status=status,
        message=message or "",
        execution_time=float(getattr(entry, "execution_time", 0.0) or 0.0),
        started=started,
        finished=time.time(),
        ran_from=ran_from,
        ran_to=ran_to,
        node=node,
        task_run_id=task_run_id,
        invocation=invocation,
        reason=message if classify(status).skipped else None,
        run_result=entry,
    )


def _timestamp(value: Any) -> float:
    if value is None:
        return 0.0
    if value.tzinfo is None:  # dbt's timing is naive UTC
        value = value.replace(tzinfo=dt.UTC)
    return float(value.timestamp())


def _reported(dbt_result: Any) -> dict[str, tuple[str, str]]:
    reported = {}
    for entry in node_results(dbt_result):
        unique_id = getattr(getattr(entry, "node", None), "unique_id", None)
        if unique_id:
            reported[unique_id] = (str(getattr(entry.status, "value", entry.status)), result_message(entry))
    return reported


@contextmanager
def _hooks_left_out(manifest: Any, hook_types: set[str]) -> Iterator[None]:
    """The build's manifest without the project hooks of these types, for one invocation
    (dbt runs every hook it finds). The nodes go back afterwards; the invocation lock
    keeps anyone else from seeing the manifest meanwhile. (A copy is not an option:
    dbt's Manifest.__reduce_ex__ does not rebuild every field.)"""
    left_out = {
        unique_id: node
        for unique_id, node in manifest.nodes.items()
        if str(getattr(node, "resource_type", "")) == "operation" and hook_types & set(getattr(node, "tags", ()) or ())
    }
    for unique_id in left_out:
        del manifest.nodes[unique_id]
    try:
        yield
    finally:
        manifest.nodes.update(left_out)
