"""The orchestrator's plan: which dbt nodes run, and what each waits for.

Built from the manifest dbt parsed once, in the flow: the selected seeds, models and
snapshots, with ephemeral models folded away (their parents become the children's
parents), and the tests placed by the test strategy:
- ``immediate``: a model's tests run right after it and gate its children, as in ``dbt build``;
- ``deferred``: every test after every model, seed and snapshot;
- ``skip``: no tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dbt_prefect.errors import OrchestratorUsageError

TEST_STRATEGIES = ("immediate", "deferred", "skip")
_EXECUTABLE = frozenset({"model", "seed", "snapshot"})
_TESTS = frozenset({"test", "unit_test"})


@dataclass(frozen=True)
class PlannedNode:
    unique_id: str
    task_run_name: str
    resource_type: str
    # Nodes whose results decide whether this one runs or is skipped.
    parents: tuple[str, ...] = ()
    # Nodes it waits for: the parents, plus (immediate) the tests that gate them, or
    # (deferred tests) every model, seed and snapshot.
    waits_for: tuple[str, ...] = ()


@dataclass
class BuildPlan:
    nodes: list[PlannedNode]  # in an order where every node comes after what it waits for
    # "on-run-start" and/or "on-run-end", when the project (or a package) defines such hooks.
    hook_types: tuple[str, ...] = ()

    def by_id(self) -> dict[str, PlannedNode]:
        return {n.unique_id: n for n in self.nodes}


def build_plan(catalog: Any, selected: Iterable[str], test_strategy: str) -> BuildPlan:
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
        ancestors = _ancestors(parents)
        for uid, node in tests.items():
            if node.resource_type == "unit_test":
                continue
            tested = set(test_parents[uid])
            if not tested:
                continue
            # As dbt build: a test gates the first nodes downstream whose ancestors
            # include everything it tests (for a one-model test: the model's children);
            # nodes further down wait for it through them.
            for child, child_parents in parents.items():
                if child in tested or not tested <= ancestors[child]:
                    continue
                if not any(p not in tested and tested <= ancestors[p] | {p} for p in child_parents):
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
            parents=decided_by(uid),
            waits_for=tuple(sorted(waits[uid])),
        )
        for uid, node in {**nodes, **tests}.items()
    }
    return BuildPlan(nodes=_topological(planned))


def _ancestors(parents: dict[str, tuple[str, ...]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}

    def visit(uid: str) -> set[str]:
        known = found.get(uid)
        if known is not None:
            return known
        result: set[str] = set()
        stack = list(parents.get(uid, ()))
        while stack:
            p = stack.pop()
            if p in result:
                continue
            result.add(p)
            if p in found:
                result |= found[p]
            else:
                stack.extend(parents.get(p, ()))
        found[uid] = result
        return result

    for uid in parents:
        visit(uid)
    return found


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
