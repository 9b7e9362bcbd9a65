"""The failure summary (runner/failures.py), in the official prefect-dbt message format."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Optional

from dbt.artifacts.resources.types import NodeType
from dbt.artifacts.schemas.results import FreshnessStatus, NodeStatus, RunStatus, TestStatus
from dbt.events.types import RunningOperationCaughtError, RunningOperationUncaughtError, StatsLine
from dbt_common.events.base_types import msg_from_base_event

from dbt_prefect.errors import PrefectDbtRunnerFailure
from dbt_prefect.runner.failures import OperationErrors, failure_lines, result_statuses, summarise_failures


def node(resource_type: Any, name: str, **extra: Any) -> SimpleNamespace:
    unique_id = f"{getattr(resource_type, 'value', resource_type)}.shop.{name}"
    return SimpleNamespace(resource_type=resource_type, name=name, unique_id=unique_id, **extra)


def result(status: Any, message: Optional[str], entry_node: Any = None, **extra: Any) -> SimpleNamespace:
    """Shaped like a dbt RunResult (or SourceFreshnessResult with `age`)."""
    return SimpleNamespace(status=status, message=message, node=entry_node, **extra)


def invocation(*entries: Any) -> SimpleNamespace:
    """Shaped like a dbtRunnerResult: .result.results."""
    return SimpleNamespace(success=False, result=SimpleNamespace(results=list(entries)))


def test_a_model_that_errored_is_one_line_with_dbts_message() -> None:
    lines = failure_lines([
        result(RunStatus.Error, '  Database Error in model orders\n  division by zero  ', node(NodeType.Model, "orders")),
    ])
    assert lines == ['Model orders errored with message: "Database Error in model orders\n  division by zero"']


def test_a_failed_test_and_a_failed_unit_test_say_failed() -> None:
    lines = failure_lines([
        result(TestStatus.Fail, "Got 3 results, configured to fail if != 0", node(NodeType.Test, "not_null_orders_id")),
        result(NodeStatus.Fail, "actual differs from expected", node(NodeType.Unit, "test_totals")),
    ])
    assert lines == [
        'Test not_null_orders_id failed with message: "Got 3 results, configured to fail if != 0"',
        'Unit test test_totals failed with message: "actual differs from expected"',
    ]


def test_a_stale_source_without_a_message_says_how_old_it_is() -> None:
    lines = failure_lines([
        result(FreshnessStatus.Error, None, node(NodeType.Source, "customers", source_name="raw"), age=7199.6),
        result(FreshnessStatus.RuntimeErr, "Database Error: no such table", node(NodeType.Source, "gone", source_name="raw"), age=None),
    ])
    assert lines == [
        'Source raw.customers errored with message: "source is stale: last loaded 7200 seconds ago"',
        'Source raw.gone errored with message: "Database Error: no such table"',
    ]


def test_a_partial_success_is_a_failure_that_says_partially_failed() -> None:
    lines = failure_lines([
        result(NodeStatus.PartialSuccess, "2 of 3 batches failed", node(NodeType.Model, "events")),
    ])
    assert lines == ['Model events partially failed with message: "2 of 3 batches failed"']


def test_nothing_that_did_not_fail_gets_a_line() -> None:
    entries = [
        result(status, "fine", node(NodeType.Model, f"m_{i}"))
        for i, status in enumerate(("success", "pass", "warn", "skipped", "no-op", "something new"))
    ]
    assert failure_lines(entries) == []
    assert summarise_failures("build", invocation(*entries)) is None


def test_a_failing_run_operation_carries_dbts_error_line() -> None:
    errors = OperationErrors()
    errors(msg_from_base_event(RunningOperationCaughtError(exc="Database Error\n  no_such_table")))
    # Other events are not errors of the operation.
    errors(msg_from_base_event(StatsLine(stats={"pass": 1, "warn": 0, "error": 0, "skip": 0, "noop": 0, "total": 1})))
    assert errors.messages == ["Database Error\n  no_such_table"]
    # dbt's run-operation result entry names no node (RunResultOutput has no .node).
    entry = SimpleNamespace(status=RunStatus.Error, message=None)
    assert failure_lines([entry], errors, "broken_operation") == [
        'Operation broken_operation errored with message: "Database Error\n  no_such_table"'
    ]
    errors(msg_from_base_event(RunningOperationUncaughtError(exc="KeyError: 'x'")))
    assert failure_lines([entry], errors, "broken_operation") == [
        'Operation broken_operation errored with message: "Database Error\n  no_such_table; KeyError: \'x\'"'
    ]


def test_summarise_failures_lists_every_failed_node_under_the_official_heading() -> None:
    run = invocation(
        result(RunStatus.Success, "OK", node(NodeType.Seed, "raw_orders")),
        result(RunStatus.Error, "Database Error in model orders", node(NodeType.Model, "orders")),
        result(TestStatus.Warn, "Got 1 result", node(NodeType.Test, "accepted_values_status")),
        result(TestStatus.Fail, "Got 2 results", node(NodeType.Test, "unique_orders_id")),
        result(RunStatus.Skipped, None, node(NodeType.Model, "customers")),
    )
    failure = summarise_failures("build", run)
    assert isinstance(failure, PrefectDbtRunnerFailure)
    assert failure.result is run
    assert str(failure) == (
        "Failures detected during invocation of dbt command 'build':\n"
        'Model orders errored with message: "Database Error in model orders"\n'
        'Test unique_orders_id failed with message: "Got 2 results"'
    )
    assert result_statuses(run) == ["success", "error", "warn", "fail", "skipped"]


def test_a_result_without_node_results_summarises_to_nothing() -> None:
    assert summarise_failures("debug", SimpleNamespace(success=False, result=True)) is None
    assert summarise_failures("build", SimpleNamespace(success=False, result=None)) is None
