"""A templated profiles.yml end to end: values from blocks reach dbt and nothing else."""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.blocks.system import Secret
from prefect.context import FlowRunContext
from prefect.variables import Variable

from dbt_prefect import DbtProfilesError, PrefectDbtRunner, PrefectDbtRunnerFailure, PrefectDbtSettings
from support.prefect_api import asset_events, logs, task_runs

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture()
def templated_shop(shop_project: Path, tmp_path: Path) -> dict[str, Any]:
    """The shop with its DuckDB settings from a Secret block and its target from a Variable."""
    agent = f"agent-{uuid.uuid4().hex}"
    Secret(value=agent).save("shop-user-agent", overwrite=True)
    Variable.set("shop_target", "dev", overwrite=True)
    database = tmp_path / "shop.duckdb"
    (shop_project / "profiles.yml").write_text(
        "shop:\n"
        '  target: "{{ prefect.variables.shop_target }}"\n'
        "  outputs:\n"
        "    dev:\n"
        "      type: duckdb\n"
        f"      path: {database}\n"
        "      threads: 4\n"
        "      settings:\n"
        '        home_directory: "/nonexistent/{{ prefect.blocks.secret.shop-user-agent }}"\n'
    )
    return {"project": shop_project, "secret": agent}


def profile_dirs() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("dbt-prefect-profiles-")}


def files_containing(root: Path, needle: str) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.name.endswith(".duckdb") and needle.encode() in path.read_bytes():
            found.append(str(path))
    return found


def test_block_values_reach_dbt_but_no_log_file_event_or_environment(
    templated_shop: dict[str, Any], caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    project, secret = templated_shop["project"], templated_shop["secret"]
    environ_before = dict(os.environ)
    temp_before = profile_dirs()
    caplog.set_level(logging.DEBUG)
    seen: dict[str, Any] = {}

    @flow
    def templated_build() -> None:
        seen["flow_run_id"] = FlowRunContext.get().flow_run.id
        runner = PrefectDbtRunner(
            settings=PrefectDbtSettings(project_dir=project, profiles_dir=project, log_level="debug"),
            include_compiled_code=True,
        )
        # The profile really carries the block's value into DuckDB.
        runner.invoke(["run-operation", "log_user_agent"])
        runner.invoke(["build"])
        runner.invoke(["debug"])
        try:
            runner.invoke(["build", "--select", "+product_revenue+", "--vars", "{fail_demo_test: true}"])
        except PrefectDbtRunnerFailure as exc:
            seen["failure"] = exc

    (project / "macros" / "log_user_agent.sql").write_text(
        "{% macro log_user_agent() %}\n"
        "  {% set agent = run_query(\"select current_setting('home_directory')\").columns[0].values()[0] %}\n"
        "  {% do log('user agent length ' ~ (agent | length) ~ ' starts ' ~ agent[:6], info=True) %}\n"
        "{% endmacro %}\n"
    )
    templated_build()

    records = logs(seen["flow_run_id"])
    assert any(r.message == f"user agent length {len('/nonexistent/') + len(secret)} starts /nonex" for r in records)
    assert len(task_runs(seen["flow_run_id"])) >= 36
    assert seen["failure"] is not None
    # Nowhere: Prefect logs, state messages, asset events, Python logging, the console,
    # dbt's log file and target/, temporary files, the environment, the exception.
    assert not [r.message for r in records if secret in r.message]
    assert not [run.name for run in task_runs(seen["flow_run_id"]) if secret in (run.state.message or "")]
    events = asset_events(seen["flow_run_id"])
    assert events
    assert not [e.id for e in events if secret in e.model_dump_json()]
    assert not [r.getMessage() for r in caplog.records if secret in r.getMessage()]
    out, err = capfd.readouterr()
    assert secret not in out and secret not in err
    assert files_containing(project / "logs", secret) == []
    assert files_containing(project / "target", secret) == []
    assert profile_dirs() == temp_before
    assert dict(os.environ) == environ_before
    assert secret not in str(seen["failure"])


def test_a_profile_error_after_templating_names_no_secret(templated_shop: dict[str, Any]) -> None:
    project, secret = templated_shop["project"], templated_shop["secret"]
    Variable.set("shop_target", "prod", overwrite=True)
    environ_before = dict(os.environ)
    temp_before = profile_dirs()
    runner = PrefectDbtRunner(settings=PrefectDbtSettings(project_dir=project, profiles_dir=project))
    with pytest.raises(DbtProfilesError) as raised:
        runner.invoke(["build"])
    assert "does not have a target named 'prod'" in str(raised.value)
    assert secret not in str(raised.value)
    assert profile_dirs() == temp_before
    assert dict(os.environ) == environ_before


def test_an_unknown_block_fails_before_dbt_starts_and_names_the_fix(shop_project: Path) -> None:
    (shop_project / "profiles.yml").write_text(
        "shop:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
        '      path: "{{ prefect.blocks.secret.no-such-block }}"\n'
    )
    seen: dict[str, Any] = {}

    @flow
    def unknown_block() -> None:
        seen["flow_run_id"] = FlowRunContext.get().flow_run.id
        try:
            PrefectDbtRunner(settings=PrefectDbtSettings(project_dir=shop_project, profiles_dir=shop_project)).invoke(["build"])
        except Exception as exc:
            seen["error"] = exc

    unknown_block()
    message = str(seen["error"])
    assert "{{ prefect.blocks.secret.no-such-block }}" in message
    assert str(shop_project / "profiles.yml") in message
    assert "Fix:" in message
    assert task_runs(seen["flow_run_id"]) == []
