"""The one status vocabulary (model/statuses.py), checked against dbt's own functions."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from dbt.artifacts.schemas.results import NodeStatus
from dbt.events.types import StatsLine
from dbt.task.printer import interpret_run_result
from prefect.client.schemas.objects import StateType

from dbt_prefect.model.statuses import (
    SUMMARY_BUCKETS,
    Outcome,
    classify,
    is_failure,
    prefect_state,
    summary_counts,
    summary_line,
)

# dbt's stats keys (dbt.task.printer.print_run_status_line) for each of our buckets.
DBT_STATS_KEY = {"PASS": "pass", "WARN": "warn", "ERROR": "error", "SKIP": "skip", "NO-OP": "noop"}

# status -> (outcome, Prefect state type, Prefect state name, check outcome, failure verb, label)
EXPECTED = {
    "success": (Outcome.SUCCEEDED, StateType.COMPLETED, "Completed", "passed", None, "OK"),
    "pass": (Outcome.SUCCEEDED, StateType.COMPLETED, "Completed", "passed", None, "PASS"),
    "no-op": (Outcome.NO_OP, StateType.COMPLETED, "No-op", None, None, "NO-OP"),
    "warn": (Outcome.WARNED, StateType.COMPLETED, "Warned", "warned", None, "WARN"),
    "fail": (Outcome.FAILED, StateType.FAILED, "Failed", "failed", "failed", "FAIL"),
    "error": (Outcome.FAILED, StateType.FAILED, "Failed", "failed", "errored", "ERROR"),
    "runtime error": (Outcome.FAILED, StateType.FAILED, "Failed", "failed", "errored", "ERROR"),
    "partial success": (Outcome.FAILED, StateType.FAILED, "Failed", None, "partially failed", "PARTIAL"),
    "skipped": (Outcome.SKIPPED, StateType.COMPLETED, "Skipped", None, None, "SKIP"),
}


def dbt_bucket(status: NodeStatus) -> str:
    """The key of dbt's `Done.` line that dbt itself counts this status in."""
    if status is NodeStatus.RuntimeErr:
        # interpret_run_result raises for it; dbt's freshness summary counts it as an error.
        with pytest.raises(RuntimeError, match="unhandled result"):
            interpret_run_result(SimpleNamespace(status=status))
        return "error"
    return interpret_run_result(SimpleNamespace(status=status))


def test_every_dbt_status_lands_in_the_bucket_dbt_counts_it_in() -> None:
    seen = []
    for status in NodeStatus:
        info = classify(status)
        assert DBT_STATS_KEY[info.bucket] == dbt_bucket(status), status
        assert info.status == status.value
        seen.append(status.value)
    assert len(seen) == 9


def test_every_dbt_status_has_its_outcome_check_verb_and_label() -> None:
    # A status a newer dbt adds is missing here: this test fails until it is classified.
    assert sorted(s.value for s in NodeStatus) == sorted(EXPECTED)
    for status in NodeStatus:
        outcome, _type, _name, check, verb, label = EXPECTED[status.value]
        info = classify(status)
        assert (info.outcome, info.check, info.failure_verb, info.label) == (outcome, check, verb, label), status
        assert info.failed is (outcome is Outcome.FAILED)
        assert info.skipped is (outcome is Outcome.SKIPPED)
        assert is_failure(status) is (outcome is Outcome.FAILED)
        # Enum member and plain string mean the same.
        assert classify(status.value) == info


def test_only_test_verdicts_carry_a_failing_row_count() -> None:
    carrying = sorted(s.value for s in NodeStatus if classify(s).has_failure_count)
    assert carrying == ["fail", "pass", "warn"]


def test_every_dbt_status_becomes_its_prefect_state() -> None:
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    for status in NodeStatus:
        _outcome, state_type, name, *_ = EXPECTED[status.value]
        state = prefect_state(status.value, "dbt said so", when.timestamp())
        assert (state.type, state.name, state.message) == (state_type, name, "dbt said so"), status
        assert state.timestamp == when


def test_a_failed_state_without_a_message_names_the_dbt_status() -> None:
    state = prefect_state("runtime error", None, 0.0)
    assert (state.type, state.name, state.message) == (StateType.FAILED, "Failed", "dbt status: runtime error")
    assert prefect_state("error", "", 0.0).message == "dbt status: error"
    # Other states keep no empty message.
    assert prefect_state("success", "", 0.0).message is None
    assert prefect_state("warn", "", 0.0).message is None


def test_an_unknown_status_is_a_success_named_as_dbt_names_it() -> None:
    info = classify("frobnicated")
    assert (info.outcome, info.bucket, info.label, info.check, info.failure_verb) == (
        Outcome.SUCCEEDED, "PASS", "FROBNICATED", None, None,
    )
    assert is_failure("frobnicated") is False
    assert is_failure("") is False
    state = prefect_state("frobnicated", "new in dbt 9", 0.0)
    assert (state.type, state.name, state.message) == (StateType.COMPLETED, "Frobnicated", "new in dbt 9")


def test_summary_line_is_dbts_stats_line_for_a_mix_of_statuses() -> None:
    statuses = [
        NodeStatus.Success, NodeStatus.Success, NodeStatus.Pass, NodeStatus.Warn, NodeStatus.Fail,
        NodeStatus.Error, NodeStatus.PartialSuccess, NodeStatus.Skipped, NodeStatus.Skipped,
        NodeStatus.Skipped, NodeStatus.NoOp,
    ]
    # dbt.task.printer.print_run_status_line, step by step.
    stats = {"error": 0, "skip": 0, "pass": 0, "warn": 0, "noop": 0, "total": 0}
    for status in statuses:
        stats[interpret_run_result(SimpleNamespace(status=status))] += 1
        stats["total"] += 1
    counts = summary_counts(statuses)
    assert counts == {"PASS": 3, "WARN": 1, "ERROR": 3, "SKIP": 3, "NO-OP": 1, "TOTAL": 11}
    assert "Done. " + summary_line(counts) == StatsLine(stats=stats).message()
    assert summary_line(counts) == "PASS=3 WARN=1 ERROR=3 SKIP=3 NO-OP=1 TOTAL=11"


def test_summary_counts_of_nothing_are_all_zero_in_dbts_order() -> None:
    counts = summary_counts([])
    assert list(counts) == [*SUMMARY_BUCKETS, "TOTAL"]
    assert summary_line(counts) == "PASS=0 WARN=0 ERROR=0 SKIP=0 NO-OP=0 TOTAL=0"
    # A bucket missing from the counts prints as 0.
    assert summary_line({"ERROR": 2, "TOTAL": 2}) == "PASS=0 WARN=0 ERROR=2 SKIP=0 NO-OP=0 TOTAL=2"
