"""The orchestrator's plan: which dbt nodes run, what each waits for, and in which wave.

Built from the manifest dbt parsed once, in the flow: the selected seeds, models,
snapshots, exposures and saved queries, with ephemeral models folded away (their parents become the children's
parents), and the tests placed by the test strategy:
- ``immediate``: a model's tests run right after it and gate its children, as in ``dbt build``;
- ``deferred``: every test after every model, seed and snapshot;
- ``skip``: no tests.

``NodeGraph`` is the plan the orchestrator runs; ``BuildPlan`` is what ``plan()`` shows a
user: the graph cut into waves (a node's wave is one after the last wave it waits for).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from dbt_prefect.errors import OrchestratorUsageError
from dbt_prefect.model.statuses import SKIPPED

TEST_STRATEGIES = ("immediate", "deferred", "skip")
# Exposures and saved queries build nothing, but `dbt build` reports them (status no-op,
# or skipped below a failure), so they are nodes of the plan like models.
NO_OP_TYPES = frozenset({"exposure", "saved_query"})
_EXECUTABLE = frozenset({"model", "seed", "snapshot"}) | NO_OP_TYPES
_TESTS = frozenset({"test", "unit_test"})


@dataclass(frozen=True)
class PlannedNode:
    unique_id: str
    task_run_name: str
    resource_type: str
    materialization: str | None = None
    # A unit test: the model it tests.
    attached_to: str | None = None
    # Nodes whose results decide whether this one runs or is skipped.
    parents: tuple[str, ...] = ()
    # Nodes it waits for: the parents, plus (immediate) the tests that gate them, or
    # (deferred tests) every model, seed and snapshot.
    waits_for: tuple[str, ...] = ()


@dataclass
class NodeGraph:
    nodes: list[PlannedNode]  # in an order where every node comes after what it waits for
    # "on-run-start" and/or "on-run-end", when the project (or a package) defines such hooks.
    hook_types: tuple[str, ...] = ()
    test_strategy: str = "immediate"

    def by_id(self) -> dict[str, PlannedNode]:
        return {n.unique_id: n for n in self.nodes}

    def waves(self, for_dbt_build: bool = False) -> list[list[PlannedNode]]:
        """The nodes by wave: each node one wave after the last node it waits for.

        ``for_dbt_build``: waves for one ``dbt build`` each. A unit test goes in its
        model's wave, just before the model (dbt build runs a unit test only together with
        its model), and (immediate strategy) a data test in the wave of the last node it tests: within one
        invocation dbt build runs a test right after what it tests, and the nodes the test
        gates are in later waves. Half the waves, and so half the invocations."""
        ids = {n.unique_id for n in self.nodes}
        riders: dict[str, list[PlannedNode]] = {}
        if for_dbt_build:
            for node in self.nodes:
                if node.resource_type == "unit_test" and node.attached_to in ids:
                    riders.setdefault(node.attached_to, []).append(node)
        riding = {n.unique_id for group in riders.values() for n in group}
        wave_of: dict[str, int] = {}
        waves: list[list[PlannedNode]] = []
        for node in self.nodes:  # topological: what a node waits for has its wave already
            if node.unique_id in riding:
                continue
            waits = [w for w in node.waits_for if w in wave_of and w not in riding]
            waits += [w for rider in riders.get(node.unique_id, ()) for w in rider.waits_for if w in wave_of]
            # Deferred tests keep their own last wave: after every model, as promised.
            rides_along = (
                for_dbt_build and node.resource_type == "test" and bool(waits) and self.test_strategy == "immediate"
            )
            number = max((wave_of[w] for w in waits), default=-1) + (0 if rides_along else 1)
            wave_of[node.unique_id] = number
            if number == len(waves):
                waves.append([])
            waves[number] += [*riders.get(node.unique_id, ()), node]
        return waves


@dataclass(frozen=True)
class ExecutionWave:
    wave_number: int
    nodes: tuple[PlannedNode, ...]


@dataclass(frozen=True)
class BuildPlan:
    """What run_build would run, from ``PrefectDbtOrchestrator.plan()``; nothing has run.

    ``skipped_nodes`` holds the selected nodes that would be skipped before running
    (downstream of a stale source with ``only_fresh_sources``), each with its reason;
    ``cache_predictions`` is None unless caching is configured.
    """

    waves: tuple[ExecutionWave, ...]
    node_count: int
    cache_predictions: dict[str, str] | None
    skipped_nodes: dict[str, dict[str, Any]]
    estimated_parallelism: int

    def __str__(self) -> str:
        lines = [
            f"BuildPlan: {self.node_count} node(s) in {len(self.waves)} wave(s)"
            f"  |  max parallelism = {self.estimated_parallelism}",
            "",
        ]
        predictions = self.cache_predictions or {}
        for wave in self.waves:
            lines.append(f"  Wave {wave.wave_number} ({len(wave.nodes)} node(s)):")
            for node in wave.nodes:
                kind = ", ".join(part for part in (node.resource_type, node.materialization) if part)
                line = f"    - {node.unique_id} [{kind}]"
                if node.unique_id in predictions:
                    line += f" (cache: {predictions[node.unique_id]})"
                lines.append(line)
        if predictions:
            counted = {p: sum(1 for v in predictions.values() if v == p) for p in ("hit", "miss", "excluded")}
            lines += [
                "",
                f"  Cache: {counted['hit']} hit(s), {counted['miss']} miss(es), {counted['excluded']} excluded",
            ]
        if self.skipped_nodes:
            lines += ["", f"  Skipped ({len(self.skipped_nodes)}):"]
            lines += [f"    - {uid}: {info.get('reason', 'unknown')}" for uid, info in self.skipped_nodes.items()]
        return "\n".join(lines)


def preview(
    graph: NodeGraph, skipped: dict[str, str], per_wave: bool, cache_predictions: dict[str, str] | None = None
) -> BuildPlan:
    """The BuildPlan of a graph: the waves of the nodes that would run, and those skipped."""
    runnable = NodeGraph([n for n in graph.nodes if n.unique_id not in skipped], graph.hook_types, graph.test_strategy)
    waves = tuple(
        ExecutionWave(number, tuple(nodes)) for number, nodes in enumerate(runnable.waves(for_dbt_build=per_wave))
    )
    return BuildPlan(
        waves=waves,
        node_count=sum(len(w.nodes) for w in waves),
        cache_predictions=cache_predictions,
        skipped_nodes={uid: {"status": SKIPPED, "reason": reason} for uid, reason in skipped.items()},
        estimated_parallelism=max((len(w.nodes) for w in waves), default=0),
    )


def build_plan(catalog: Any, selected: Iterable[str], test_strategy: str) -> NodeGraph:
    """The DAG of one build, from the node records (ephemerals folded by catalog.parents)."""
    if test_strategy not in TEST_STRATEGIES:
        raise OrchestratorUsageError(
            f"test_strategy must be one of {', '.join(TEST_STRATEGIES)}, not {test_strategy!r}"
        )
    selected = list(dict.fromkeys(selected))
    nodes: dict[str, Any] = {}
    tests: dict[str, Any] = {}
    for unique_id in selected:
        node = catalog.get(unique_id)
        if node is None or node.is_ephemeral:
            continue
        if node.resource_type in _EXECUTABLE:
            nodes[unique_id] = node
        elif node.resource_type in _TESTS and test_strategy != "skip":
            tests[unique_id] = node

    def plan_parents(node: Any) -> tuple[str, ...]:
        return tuple(p.unique_id for p in catalog.parents(node) if p.unique_id in nodes)

    parents = {uid: plan_parents(node) for uid, node in nodes.items()}
    test_parents: dict[str, tuple[str, ...]] = {}
    for uid, node in tests.items():
        if node.resource_type == "unit_test":
            # dbt build runs a model's unit tests before the model, after its parents.
            model = node.attached_node
            test_parents[uid] = parents.get(model, ()) if model else ()
        else:
            test_parents[uid] = plan_parents(node)

    waits: dict[str, set[str]] = {uid: set(p) for uid, p in parents.items()}
    if test_strategy == "immediate":
        descends_from = _descent(parents)
        children: dict[str, list[str]] = {}
        for uid, node_parents in parents.items():
            for parent in node_parents:
                children.setdefault(parent, []).append(uid)
        for uid, node in tests.items():
            if node.resource_type == "unit_test":
                continue
            tested = set(test_parents[uid])
            if not tested:
                continue

            # As dbt build: a test gates the first nodes downstream whose ancestors
            # include everything it tests (for a one-model test: the model's children);
            # nodes further down wait for it through them. The search goes down from the
            # tested nodes and stops at the first node below that has all of them above.
            def covers(candidate: str, tested: set[str] = tested) -> bool:
                return all(descends_from(candidate, t) for t in tested)

            queue = [child for t in tested for child in children.get(t, ())]
            seen: set[str] = set()
            while queue:
                child = queue.pop()
                if child in seen or child in tested:
                    continue
                seen.add(child)
                if not covers(child):
                    queue.extend(children.get(child, ()))
                elif not any(p not in tested and covers(p) for p in parents[child]):
                    waits[child].add(uid)
        for uid, node in tests.items():
            if node.resource_type == "unit_test" and node.attached_node in waits:
                # Before its model, after what gates the model: a model that dbt skips
                # (a parent or a gating test failed) has its unit tests skipped too.
                test_parents[uid] = tuple(sorted(waits[node.attached_node]))
        for uid, node in tests.items():
            if node.resource_type == "unit_test" and node.attached_node in waits:
                waits[node.attached_node].add(uid)
        for uid in tests:
            waits[uid] = set(test_parents[uid])
    elif test_strategy == "deferred":
        everything = set(nodes)
        for uid in tests:
            waits[uid] = set(everything)

    def decided_by(uid: str) -> tuple[str, ...]:
        if uid in tests:
            return test_parents[uid]
        if test_strategy == "immediate":
            # As dbt build: a node is skipped when a parent, a test that gates it or one
            # of its unit tests failed, so all of them decide whether it runs.
            return tuple(dict.fromkeys((*parents[uid], *sorted(waits[uid] - set(parents[uid])))))
        return parents[uid]

    planned = {
        uid: PlannedNode(
            unique_id=uid,
            task_run_name=node.task_run_name,
            resource_type=node.resource_type,
            materialization=None if node.resource_type in _TESTS | NO_OP_TYPES else node.materialized,
            attached_to=node.attached_node if node.resource_type == "unit_test" else None,
            parents=decided_by(uid),
            waits_for=tuple(sorted(waits[uid])),
        )
        for uid, node in {**nodes, **tests}.items()
    }
    return NodeGraph(nodes=_topological(planned), test_strategy=test_strategy)


def _descent(parents: dict[str, tuple[str, ...]]) -> Callable[[str, str], bool]:
    """``descends_from(node, ancestor)``: whether ``ancestor`` is above ``node`` in the graph.

    Answered by a search upwards from the node that never goes above the ancestor's
    depth, with what each search learnt kept per ancestor: no ancestor set per node,
    which at 5,000 models would hold millions of entries."""
    depth: dict[str, int] = {}
    for uid in parents:
        stack, entered = [uid], set()
        while stack:
            top = stack[-1]
            if top in depth:
                stack.pop()
                continue
            # A parent already entered on this path is a cycle, which _topological names.
            pending = [p for p in parents.get(top, ()) if p not in depth and p not in entered]
            entered.add(top)
            if pending:
                stack.extend(pending)
            else:
                depth[top] = 1 + max((depth.get(p, -1) for p in parents.get(top, ())), default=-1)
                stack.pop()
    below: dict[str, set[str]] = {}  # ancestor -> nodes known to descend from it
    not_below: dict[str, set[str]] = {}  # ancestor -> nodes known not to

    def descends_from(node: str, ancestor: str) -> bool:
        yes, no = below.setdefault(ancestor, set()), not_below.setdefault(ancestor, set())
        floor = depth[ancestor]
        if node in yes:
            return True
        if node in no or depth[node] <= floor:
            return False
        visited = {node}
        stack = [node]
        while stack:
            for parent in parents.get(stack.pop(), ()):
                if parent == ancestor or parent in yes:
                    yes.add(node)
                    return True
                if parent in visited or parent in no or depth[parent] <= floor:
                    continue
                visited.add(parent)
                stack.append(parent)
        no.update(visited)  # none of them reaches the ancestor
        return False

    return descends_from


def _topological(planned: dict[str, PlannedNode]) -> list[PlannedNode]:
    remaining = {uid: set(n.waits_for) & planned.keys() for uid, n in planned.items()}
    order: list[PlannedNode] = []
    ready = sorted(uid for uid, deps in remaining.items() if not deps)
    dependents: dict[str, list[str]] = {}
    for uid, deps in remaining.items():
        for dep in deps:
            dependents.setdefault(dep, []).append(uid)
    while ready:
        uid = ready.pop(0)
        order.append(planned[uid])
        for child in sorted(dependents.get(uid, ())):
            deps = remaining[child]
            deps.discard(uid)
            if not deps:
                ready.append(child)
    if len(order) != len(planned):
        cycle = sorted(set(planned) - {n.unique_id for n in order})
        raise OrchestratorUsageError(f"the dbt graph has a cycle through {cycle[:5]}")
    return order
