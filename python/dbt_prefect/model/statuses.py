"""dbt's node statuses (and its source freshness statuses): the one place that says what each means to dbt-prefect.

dbt reports a node's result as one of ``NodeStatus`` (success, pass, no-op, warn, fail,
error, runtime error, partial success, skipped). Every other module asks this one what a
status becomes: its outcome, the bucket of dbt's ``Done.`` line, the word dbt prints, the
Prefect state, the asset-check outcome and the wording of the failure summary.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefect.client.schemas.objects import StateType
from prefect.states import Completed, Failed, State

from dbt_prefect._compat.prefect import utc_datetime

if TYPE_CHECKING:
    from dbt_prefect.model.nodes import DbtNode


class Outcome(enum.Enum):
    """What happened to a node, whatever dbt command ran it."""

    SUCCEEDED = "succeeded"
    WARNED = "warned"
    FAILED = "failed"
    SKIPPED = "skipped"
    NO_OP = "no-op"


# The buckets of dbt's closing line, in its order:
# ``Done. PASS=.. WARN=.. ERROR=.. SKIP=.. NO-OP=.. TOTAL=..`` (dbt.task.printer).
SUMMARY_BUCKETS = ("PASS", "WARN", "ERROR", "SKIP", "NO-OP")


@dataclass(frozen=True)
class StatusInfo:
    status: str
    outcome: Outcome
    bucket: str  # one of SUMMARY_BUCKETS
    label: str  # the word dbt prints for the node: OK, PASS, FAIL, ...
    check: str | None  # a test's asset-check outcome: passed, warned, failed
    failure_verb: str | None  # "Model orders <verb> with message ..."
    # A test verdict (pass, warn, fail) carries its failing-row count; an error does not.
    has_failure_count: bool = False

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED

    @property
    def skipped(self) -> bool:
        return self.outcome is Outcome.SKIPPED


def _info(status: str, outcome: Outcome, bucket: str, label: str, check: str | None, verb: str | None) -> StatusInfo:
    return StatusInfo(status, outcome, bucket, label, check, verb, has_failure_count=status in ("pass", "warn", "fail"))


SKIPPED = "skipped"
CACHED = "cached"
ERROR = "error"
SUCCESS = "success"
RUNTIME_ERROR = "runtime error"
WARN = "warn"
FAIL = "fail"
PARTIAL_SUCCESS = "partial success"

# ``dbt source freshness`` reports a source as one of FreshnessStatus: the same words, a
# different meaning. A source in error or runtime error is stale.
FRESHNESS_STATUSES = ("pass", WARN, ERROR, RUNTIME_ERROR)
STALE_FRESHNESS_STATUSES = frozenset({ERROR, RUNTIME_ERROR})

_KNOWN = {
    info.status: info
    for info in (
        _info("success", Outcome.SUCCEEDED, "PASS", "OK", "passed", None),
        _info("pass", Outcome.SUCCEEDED, "PASS", "PASS", "passed", None),
        _info("no-op", Outcome.NO_OP, "NO-OP", "NO-OP", None, None),
        _info(WARN, Outcome.WARNED, "WARN", "WARN", "warned", None),
        _info(FAIL, Outcome.FAILED, "ERROR", "FAIL", "failed", "failed"),
        _info("error", Outcome.FAILED, "ERROR", "ERROR", "failed", "errored"),
        _info(RUNTIME_ERROR, Outcome.FAILED, "ERROR", "ERROR", "failed", "errored"),
        _info(PARTIAL_SUCCESS, Outcome.FAILED, "ERROR", "PARTIAL", None, "partially failed"),
        _info("skipped", Outcome.SKIPPED, "SKIP", "SKIP", None, None),
        # Not dbt's: the orchestrator's cache answered for the node, so dbt did not run it.
        _info("cached", Outcome.SUCCEEDED, "PASS", "CACHED", None, None),
    )
}


def classify(status: object) -> StatusInfo:
    """What a dbt status means; a status a newer dbt adds counts as a success, never a failure."""
    text = str(getattr(status, "value", status))
    info = _KNOWN.get(text)
    if info is None:
        info = _info(text, Outcome.SUCCEEDED, "PASS", text.upper() or "?", None, None)
    return info


def is_failure(status: object) -> bool:
    return classify(status).failed


def hook_status(status: object) -> str:
    """A node's status in the words of the lifecycle hooks (the official API): success,
    error or skipped."""
    outcome = classify(status).outcome
    if outcome is Outcome.FAILED:
        return ERROR
    if outcome is Outcome.SKIPPED:
        return SKIPPED
    return SUCCESS


def summary_counts(statuses: object) -> dict[str, int]:
    """dbt's closing-line counts for these statuses, with TOTAL."""
    counts = dict.fromkeys(SUMMARY_BUCKETS, 0)
    total = 0
    for status in statuses:  # type: ignore[attr-defined]
        counts[classify(status).bucket] += 1
        total += 1
    counts["TOTAL"] = total
    return counts


def summary_line(counts: dict[str, int]) -> str:
    """``PASS=3 WARN=0 ERROR=1 SKIP=0 NO-OP=1 TOTAL=5``, as dbt prints it after ``Done.``."""
    return " ".join(f"{bucket}={counts.get(bucket, 0)}" for bucket in (*SUMMARY_BUCKETS, "TOTAL"))


def prefect_state(status: str, message: str | None, timestamp: float) -> State:
    """The terminal Prefect state of a node that ended with a dbt status."""
    when = utc_datetime(timestamp)
    info = classify(status)
    if info.outcome is Outcome.FAILED:
        return Failed(message=message or f"dbt status: {status}", timestamp=when)
    if info.outcome is Outcome.WARNED:
        return Completed(name="Warned", message=message or None, timestamp=when)
    if info.outcome is Outcome.SKIPPED:
        return State(type=StateType.COMPLETED, name="Skipped", message=message, timestamp=when)
    if info.outcome is Outcome.NO_OP:
        return Completed(name="No-op", message=message or None, timestamp=when)
    if info.status == CACHED:
        # The name Prefect gives a task run its own cache answered.
        return Completed(name="Cached", message=message or None, timestamp=when)
    if info.status in _KNOWN:
        return Completed(message=message or None, timestamp=when)
    # A status this version of dbt-prefect does not know: named as dbt names it.
    return Completed(name=status.title() if status else "Completed", message=message, timestamp=when)


def skip_reason(parents: Iterable[DbtNode], status_of: Callable[[str], str | None]) -> str:
    """Why dbt skipped a node, from the dbt statuses of what decides whether it runs (its
    parents, and in an orchestrated build the tests that gate it): ``status_of(unique_id)``,
    None if unknown."""
    for parent in parents:
        status = status_of(parent.unique_id)
        if status is None:
            continue
        info = classify(status)
        if info.failed:
            return f"Skipped because {parent.resource_type} {parent.name} finished with status {status}"
        if info.skipped:
            return f"Skipped because {parent.resource_type} {parent.name} was skipped"
    return "Skipped by dbt"
