"""Bad input fails early with an error that names the problem and the fix, and leaves no task run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.context import FlowRunContext

from dbt_prefect import (
    DbtArgumentsError,
    DbtProfilesError,
    DbtProjectNotFound,
    DbtWarehouseLocked,
    PrefectDbtRunner,
    PrefectDbtSettings,
)
from support.prefect_api import task_runs

pytestmark = pytest.mark.usefixtures("prefect_server")


def invoke_in_flow(runner: PrefectDbtRunner, args: Any) -> tuple[BaseException, list[Any]]:
    """Run invoke in a flow; return what it raised and the task runs the flow has afterwards."""
    caught: dict[str, Any] = {}

    @flow(name="dbt-prefect-bad-input")
    def bad_input() -> None:
        try:
            runner.invoke(args)
        except Exception as exc:
            caught["error"] = exc
        caught["runs"] = task_runs(FlowRunContext.get().flow_run.id)

    bad_input()
    assert "error" in caught, "invoke() accepted bad input"
    return caught["error"], caught["runs"]


def runner_for(project: Path, profiles: Path | None = None) -> PrefectDbtRunner:
    return PrefectDbtRunner(
        settings=PrefectDbtSettings(project_dir=project, profiles_dir=profiles or project)
    )


def test_missing_project_dir_names_the_path_and_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-project"
    error, runs = invoke_in_flow(runner_for(missing), ["build"])
    assert isinstance(error, DbtProjectNotFound)
    assert str(error) == (
        f"dbt project directory {missing} does not exist "
        "(set DBT_PROJECT_DIR, PrefectDbtSettings(project_dir=...) or --project-dir)"
    )
    assert runs == []


def test_directory_without_dbt_project_yml_is_refused(tmp_path: Path) -> None:
    error, runs = invoke_in_flow(runner_for(tmp_path), ["build"])
    assert isinstance(error, DbtProjectNotFound)
    assert str(error).startswith(f"no dbt_project.yml in {tmp_path} (set DBT_PROJECT_DIR")
    assert runs == []


def test_missing_profiles_yml_names_where_it_looked(shop_project: Path, tmp_path: Path) -> None:
    empty = tmp_path / "profiles-here"
    empty.mkdir()
    error, runs = invoke_in_flow(runner_for(shop_project, empty), ["build"])
    assert isinstance(error, DbtProfilesError)
    assert str(error) == (
        f"profiles.yml not found in {empty} (set DBT_PROFILES_DIR or PrefectDbtSettings(profiles_dir=...))"
    )
    assert runs == []


def test_invalid_profiles_yaml_names_the_line(shop_project: Path) -> None:
    (shop_project / "profiles.yml").write_text("shop:\n  target: dev\n  outputs: [broken\n")
    error, runs = invoke_in_flow(runner_for(shop_project), ["build"])
    assert isinstance(error, DbtProfilesError)
    assert str(error).startswith(f"profiles.yml at {shop_project / 'profiles.yml'} is not valid YAML: line 4: ")
    assert runs == []


def test_unknown_target_lists_the_valid_ones(shop_project: Path) -> None:
    error, runs = invoke_in_flow(runner_for(shop_project), ["build", "--target", "prod"])
    assert isinstance(error, DbtProfilesError)
    assert "The profile 'shop' does not have a target named 'prod'" in str(error)
    assert "- dev" in str(error)
    assert f"profiles.yml read from {shop_project}" in str(error)
    assert runs == []


def test_unknown_command_is_refused_before_dbt_starts(shop_project: Path) -> None:
    error, runs = invoke_in_flow(runner_for(shop_project), ["biuld"])
    assert isinstance(error, DbtArgumentsError)
    assert str(error) == (
        "dbt cannot run ['biuld']: No such command 'biuld'. "
        "(the arguments are dbt's own: check them with `dbt --help`)"
    )
    assert runs == []


def test_unknown_flag_is_refused(shop_project: Path) -> None:
    error, runs = invoke_in_flow(runner_for(shop_project), ["build", "--selcet", "orders"])
    assert isinstance(error, DbtArgumentsError)
    assert "No such option '--selcet'" in str(error)
    assert "dbt build --help" in str(error)
    assert runs == []


def test_a_string_instead_of_a_list_is_refused(shop_project: Path) -> None:
    error, runs = invoke_in_flow(runner_for(shop_project), "build")
    assert isinstance(error, DbtArgumentsError)
    assert str(error).startswith("invoke() takes a list of strings, as dbtRunner does")
    assert runs == []


def test_duckdb_locked_by_another_process_says_so(shop_project: Path, tmp_path: Path) -> None:
    database = tmp_path / "shop.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys, time; c = duckdb.connect({str(database)!r}); print('locked', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        error, runs = invoke_in_flow(runner_for(shop_project), ["build"])
    finally:
        holder.kill()
        holder.wait()
    assert isinstance(error, DbtWarehouseLocked)
    assert str(error).startswith("the DuckDB database is locked by another process: IO Error: Could not set lock on file")
    assert str(database) in str(error)
    assert "point the profile's `path` at another file" in str(error)
    assert runs == []
