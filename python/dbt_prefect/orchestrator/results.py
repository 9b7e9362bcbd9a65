"""What an orchestrated build returns: one result per node and per hook task."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prefect.utilities.annotations import allow_failure as _prefect_allow_failure

from dbt_prefect.model.statuses import CACHED, ERROR, SKIPPED, SUCCESS, classify, hook_status, is_failure
from dbt_prefect.orchestrator.worker import NodeOutcome


def official_status(dbt_status: str, cached: bool = False) -> str:
    """A node's dbt status in the official result format: the lifecycle hooks' words
    (success, error, skipped), and cached for a node the cache answered."""
    return CACHED if cached or dbt_status == CACHED else hook_status(dbt_status)


def _iso(timestamp: float) -> str | None:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat() if timestamp else None


@dataclass
class NodeResult(NodeOutcome):
    """What the node task reported, with the node record and its task run: shaped like
    dbt's RunResult where the failure summary reads it (``node``, ``status``, ``message``)."""

    node: Any = None  # the DbtNode record (a HookRecord for hooks)
    task_run_id: uuid.UUID | None = None
    # The dbt invocation that ran it: {"command": "build", "args": [...]}.
    invocation: dict[str, Any] | None = None
    # A skipped node: why, and the failed nodes upstream of it.
    reason: str | None = None
    failed_upstream: tuple[str, ...] = ()
    cached: bool = False
    # dbt's own RunResult, when a dbt invocation in the flow's process ran the node (per wave).
    run_result: Any = None

    @classmethod
    def _recorded(cls, done: Any, status: str, **fields: Any) -> NodeResult:
        """A node dbt did not run, from the task run the recorder recorded for it."""
        return cls(
            unique_id=done.node.unique_id,
            status=status,
            message=done.message,
            node=done.node,
            task_run_id=done.task_run_id,
            **fields,
        )

    @classmethod
    def not_run(cls, done: Any, failed_upstream: tuple[str, ...] = ()) -> NodeResult:
        """A node skipped before dbt saw it."""
        return cls._recorded(done, SKIPPED, reason=done.message, failed_upstream=failed_upstream)

    @classmethod
    def from_cache(cls, done: Any) -> NodeResult:
        """A node the cache answered."""
        return cls._recorded(done, CACHED, cached=True)

    @property
    def official_status(self) -> str:
        return official_status(self.status, self.cached)

    def as_official(self) -> dict[str, Any]:
        """This result in the official format, plus dbt's own status and the task run."""
        status = self.official_status
        result: dict[str, Any] = {"status": status}
        if status in (SUCCESS, ERROR) and (self.ran_from or self.started):
            started = self.ran_from or self.started
            completed = self.ran_to or self.finished
            result["timing"] = {
                "started_at": _iso(started),
                "completed_at": _iso(completed),
                "duration_seconds": round(max(completed - started, 0.0), 6),
                "execution_time": self.execution_time,
            }
        if self.invocation is not None and status != SKIPPED:
            result["invocation"] = self.invocation
        if status == ERROR:
            kind = "DbtTestFailure" if classify(self.status).label == "FAIL" else "DbtNodeError"
            result["error"] = {"message": self.message or f"dbt reported {self.status}", "type": kind}
        if status == SKIPPED:
            result["reason"] = self.reason or self.message or "upstream failure"
            result["failed_upstream"] = list(self.failed_upstream)
        result["dbt_status"] = self.status
        if self.task_run_id is not None:
            result["task_run_id"] = str(self.task_run_id)
        return result


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


class BuildResult(dict[str, dict[str, Any]]):
    """What run_build returns: the official results dict, ``unique_id`` -> result, each
    with its ``status`` (success, cached, error or skipped) and, as they apply, ``timing``,
    ``invocation``, ``error``, ``reason`` and ``failed_upstream``.

    It also carries dbt-prefect's richer view: ``success``, ``results`` (NodeResult, with
    dbt's own status, message and task run) and ``hook_results`` for the project's
    on-run-start/end hooks (a failed hook fails the build, as in dbt).
    """

    def __init__(
        self,
        success: bool,
        results: Iterable[NodeResult] = (),
        exception: BaseException | None = None,
        hook_results: Iterable[NodeResult] = (),
    ) -> None:
        self.results = list(results)
        self.hook_results = list(hook_results)
        super().__init__((r.unique_id, r.as_official()) for r in self.results)
        self.success = success and not self.failed_results
        self.exception = exception

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
