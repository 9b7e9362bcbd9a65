"""What an orchestrated build returns: one result per node and per hook task."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prefect.utilities.annotations import allow_failure as _prefect_allow_failure

from dbt_prefect.model.statuses import is_failure
from dbt_prefect.orchestrator.worker import NodeOutcome


@dataclass
class NodeResult(NodeOutcome):
    """What the node task reported, with the node record and its task run: shaped like
    dbt's RunResult where the failure summary reads it (``node``, ``status``, ``message``)."""

    node: Any = None  # the DbtNode record (a HookRecord for hooks)
    task_run_id: uuid.UUID | None = None


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
    exception: BaseException | None = None
    hook_results: list[NodeResult] = field(default_factory=list)

    @property
    def result(self) -> BuildResult:
        # dbtRunnerResult.result.results: failures.summarise_failures reads it that way.
        return self

    def by_name(self) -> dict[str, NodeResult]:
        return {r.node.task_run_name: r for r in self.results}

    @property
    def failed_results(self) -> list[NodeResult]:
        return [r for r in (*self.hook_results, *self.results) if is_failure(r.status)]


class AllowFailure(_prefect_allow_failure):
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
    def _make(cls, iterable: Iterable[Any]) -> AllowFailure:
        return cls(*iterable)

    def _asdict(self) -> dict[str, Any]:
        return {"value": self[0]}

    def _replace(self, **changes: Any) -> AllowFailure:
        return type(self)(changes.get("value", self[0]))

    def __getnewargs__(self) -> tuple[Any]:
        return (self[0],)
