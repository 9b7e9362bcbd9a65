"""extra_cli_args of run_build: what passes to dbt, what is refused, and --vars."""

from __future__ import annotations

import logging

import pytest

from dbt_prefect.errors import OrchestratorUsageError
from dbt_prefect.orchestrator.cli_args import take_vars, validate_extra_cli_args


def test_other_flags_pass_through_in_order() -> None:
    args = ["--vars", '{"day": "2026-11-30"}', "--no-partial-parse", "--empty"]
    assert validate_extra_cli_args(args) == args
    assert validate_extra_cli_args(None) == []


def test_a_string_is_refused_with_the_list_to_pass() -> None:
    with pytest.raises(OrchestratorUsageError) as raised:
        validate_extra_cli_args("--no-partial-parse --empty")  # type: ignore[arg-type]
    assert str(raised.value) == (
        "extra_cli_args must be a list of arguments, not the string '--no-partial-parse --empty': "
        "pass ['--no-partial-parse', '--empty']"
    )


def test_flags_with_a_parameter_name_it() -> None:
    with pytest.raises(OrchestratorUsageError) as raised:
        validate_extra_cli_args(["--defer-state=prod"])
    assert str(raised.value) == (
        "extra_cli_args cannot contain --defer-state: use PrefectDbtOrchestrator(defer_state_path=Path(...)) instead"
    )
    with pytest.raises(OrchestratorUsageError, match="use run_build\\(full_refresh=True\\) instead"):
        validate_extra_cli_args(["--full-refresh"])


def test_risky_flags_pass_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dbt_prefect"):
        assert validate_extra_cli_args(["-x"]) == ["-x"]
    assert caplog.messages == [
        "extra_cli_args contains --fail-fast, which dbt-prefect passes on, but in per-wave mode dbt stops the "
        "rest of the wave at the first failure"
    ]


def test_vars_are_taken_out_and_merged_with_run_builds_own() -> None:
    kept, text = take_vars(["--vars", "{day: '2026-11-30', n: 1}", "--empty"], {"n": 2})
    assert kept == ["--empty"]
    assert text == '{"day": "2026-11-30", "n": 2}'
    assert take_vars(["--vars={a: 1}"], None) == ([], '{"a": 1}')
    assert take_vars([], None) == ([], None)
    with pytest.raises(OrchestratorUsageError, match="--vars that are not a mapping"):
        take_vars(["--vars", "[1, 2]"], None)
