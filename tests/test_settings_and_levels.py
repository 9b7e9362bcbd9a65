"""PrefectDbtSettings precedence and the dbt-to-Python level mapping (pure, no server)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from dbt_common.events.base_types import EventLevel
from prefect.settings import PREFECT_LOGGING_LEVEL, temporary_settings

from dbt_prefect import PrefectDbtSettings
from dbt_prefect.runner.args import parse_invocation
from dbt_prefect.model.levels import python_level, to_dbt_level


@pytest.mark.parametrize(
    ("dbt_level", "python"),
    [("debug", logging.DEBUG), ("test", logging.DEBUG), ("info", logging.INFO), ("warn", logging.WARNING), ("error", logging.ERROR)],
)
def test_every_dbt_level_maps_to_a_python_level(dbt_level: str, python: int) -> None:
    assert python_level(dbt_level) == python


@pytest.mark.parametrize(
    ("given", "dbt_level"),
    [("WARNING", "warn"), ("CRITICAL", "error"), ("warning", "warn"), ("DEBUG", "debug"), (EventLevel.ERROR, "error"),
     (logging.WARNING, "warn"), ("none", "none"), ("TEST", "test")],
)
def test_python_and_dbt_level_names_normalise_to_dbt_levels(given: object, dbt_level: str) -> None:
    assert to_dbt_level(given) == dbt_level


def test_an_unknown_level_says_which_are_valid() -> None:
    with pytest.raises(ValueError, match=r"unknown log level 'loud': use one of debug, info, warn, error, none"):
        to_dbt_level("loud")


@pytest.mark.parametrize(("prefect_level", "expected"), [("WARNING", "warn"), ("CRITICAL", "error"), ("DEBUG", "debug")])
def test_default_dbt_level_follows_prefect_even_for_levels_dbt_lacks(
    prefect_level: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DBT_LOG_LEVEL", raising=False)
    with temporary_settings({PREFECT_LOGGING_LEVEL: prefect_level}):
        assert PrefectDbtSettings().log_level == expected


def test_settings_read_dbt_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DBT_PROJECT_DIR", str(tmp_path / "project"))
    monkeypatch.setenv("DBT_PROFILES_DIR", str(tmp_path / "profiles"))
    monkeypatch.setenv("DBT_TARGET_PATH", "custom-target")
    monkeypatch.setenv("DBT_LOG_LEVEL", "warn")
    settings = PrefectDbtSettings()
    assert settings.project_dir == tmp_path / "project"
    assert settings.profiles_dir == tmp_path / "profiles"
    assert settings.target_path == Path("custom-target")
    assert settings.log_level == "warn"


def test_settings_object_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DBT_PROJECT_DIR", str(tmp_path / "from-env"))
    monkeypatch.setenv("DBT_LOG_LEVEL", "debug")
    settings = PrefectDbtSettings(project_dir=tmp_path / "explicit", log_level=EventLevel.ERROR)
    assert settings.project_dir == tmp_path / "explicit"
    assert settings.log_level == EventLevel.ERROR


def test_defaults_are_dbts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DBT_PROJECT_DIR", "DBT_PROFILES_DIR", "DBT_TARGET_PATH", "DBT_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    settings = PrefectDbtSettings()
    assert settings.project_dir == tmp_path
    assert settings.profiles_dir == Path.home() / ".dbt"
    # The official default; dbt is told only a target path that was set.
    assert settings.target_path == Path("target")
    assert settings.given_target_path is None
    assert PrefectDbtSettings(target_path=tmp_path / "t").given_target_path == tmp_path / "t"
    (tmp_path / "profiles.yml").write_text("x: {}\n")
    assert PrefectDbtSettings().profiles_dir == tmp_path


def test_flags_and_kwargs_win_over_settings() -> None:
    invocation = parse_invocation(["--log-level", "debug", "build", "--project-dir=/from/flag", "--target-path", "t"])
    assert invocation.command == "build"
    assert invocation.given("log_level", {}) == "debug"
    assert invocation.given("project_dir", {}) == "/from/flag"
    assert invocation.given("project_dir", {"project_dir": "/from/kwarg"}) == "/from/kwarg"
    assert invocation.given("target_path", {}) == "t"
    assert invocation.given("profiles_dir", {}) is None


@pytest.mark.parametrize(
    ("args", "command"),
    [(["source", "freshness"], "source freshness"), (["docs", "generate"], "docs generate"),
     (["run-operation", "my_macro", "--args", "{}"], "run-operation"), (["ls", "-s", "orders"], "ls")],
)
def test_the_command_is_read_like_dbt_reads_it(args: list[str], command: str) -> None:
    assert parse_invocation(args).command == command
