"""One summarised exception for the nodes that failed in an invocation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dbt_prefect.errors import PrefectDbtRunnerFailure
from dbt_prefect.model.statuses import Outcome, classify


def node_results(result: Any) -> list[Any]:
    """The per-node results of a dbtRunnerResult, whatever the command returned."""
    payload = getattr(result, "result", None)
    results = getattr(payload, "results", None)
    if results is None:
        return []
    try:
        return list(results)
    except TypeError:
        return []


def _display_type(resource_type: str) -> str:
    words = resource_type.replace("_", " ")
    return words[:1].upper() + words[1:]


def result_message(entry: Any) -> str:
    """dbt's message for one result; a freshness result has none, only how stale the source is."""
    message = (getattr(entry, "message", None) or "").strip()
    age = getattr(entry, "age", None)
    stale = classify(getattr(entry, "status", "")).outcome in (Outcome.FAILED, Outcome.WARNED)
    if not message and isinstance(age, (int, float)) and stale:
        message = f"source is stale: last loaded {age:.0f} seconds ago"
    return message


def result_statuses(result: Any) -> list[str]:
    """The status of every entry of dbt's result, run hooks included, in dbt's order."""
    return [str(getattr(entry.status, "value", entry.status)) for entry in node_results(result)]


class OperationErrors:
    """A dbt callback keeping the errors of `run-operation`, whose result names no node."""

    __slots__ = ("messages",)
    _PREFIX = "Encountered an error while running operation: "

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, msg: Any) -> None:
        if msg.info.name in ("RunningOperationCaughtError", "RunningOperationUncaughtError"):
            self.messages.append(msg.info.msg.removeprefix(self._PREFIX).strip())


def failure_lines(
    results: Iterable[Any], operation: OperationErrors | None = None, operation_name: str = ""
) -> list[str]:
    lines = []
    for entry in results:
        verb = classify(getattr(entry, "status", "")).failure_verb
        if verb is None:
            continue
        node = getattr(entry, "node", None)
        if node is None and operation is not None:
            message = (getattr(entry, "message", None) or "").strip() or "; ".join(operation.messages)
            lines.append(f'Operation {operation_name} {verb} with message: "{message}"')
            continue
        resource_type = str(
            getattr(getattr(node, "resource_type", ""), "value", getattr(node, "resource_type", "node"))
        )
        name = getattr(node, "name", None) or getattr(node, "unique_id", "unknown node")
        source_name = getattr(node, "source_name", None)
        if resource_type == "source" and source_name:
            name = f"{source_name}.{name}"
        message = result_message(entry)
        lines.append(f'{_display_type(resource_type or "node")} {name} {verb} with message: "{message}"')
    return lines


def summarise_failures(
    command: str, result: Any, operation: OperationErrors | None = None, operation_name: str = ""
) -> PrefectDbtRunnerFailure | None:
    """The exception to raise for a result with failed nodes, or None when none failed."""
    lines = failure_lines(node_results(result), operation, operation_name)
    if not lines:
        return None
    message = f"Failures detected during invocation of dbt command '{command}':\n" + "\n".join(lines)
    return PrefectDbtRunnerFailure(message, result=result)
