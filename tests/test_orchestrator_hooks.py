"""on-run-start and on-run-end hooks under the orchestrator: one task each, before the
first node and after the last, on a real dask.distributed LocalCluster and PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from dbt_prefect import DbtHookContext, PrefectDbtRunnerFailure
from support.orchestration import dask_runner, orchestrate
from support.projects import make_small_project
from support.prefect_api import by_name, logs, message_of, state_of, task_runs

pytestmark = pytest.mark.usefixtures("prefect_server", "pg_secret_block")

# The model reads the table on-run-start creates; on-run-end records how many results it saw.
MODELS = {
    "landed.sql": "select count(*) as n from {{ target.schema }}_landing.events",
    "doubled.sql": "select n * 2 as n from {{ ref('landed') }}",
}
START_HOOKS = [
    "create schema if not exists {{ target.schema }}_landing",
    "create table if not exists {{ target.schema }}_landing.events as select 1 as id union all select 2",
]
END_HOOK = (
    "create table {{ target.schema }}_landing.build_log as "
    "select {{ results | length }} as results, "
    "{{ results | selectattr('status', 'equalto', 'success') | list | length }} as succeeded"
)


def with_hooks(project: Path, start: list[str], end: list[str]) -> Path:
    def quoted(hooks: list[str]) -> str:
        return "[" + ", ".join('"' + hook + '"' for hook in hooks) + "]"

    with open(project / "dbt_project.yml", "a") as handle:
        handle.write(f"on-run-start: {quoted(start)}\non-run-end: {quoted(end)}\n")
    return project


def test_hooks_run_once_in_their_own_tasks_before_the_first_node_and_after_the_last(
    tmp_path: Path, postgres: Any, dask_cluster: Any
) -> None:
    project = with_hooks(make_small_project(tmp_path, postgres, "hooked", "hooked", MODELS), START_HOOKS, [END_HOOK])
    postgres.drop_schemas("hooked_landing")

    outcome = orchestrate(project, dask_runner(dask_cluster))

    assert outcome.state.is_completed(), outcome.error
    runs = by_name(task_runs(outcome.flow_run_id))
    assert sorted(runs) == ["model doubled", "model landed", "on-run-end", "on-run-start"]
    assert {state_of(run) for run in runs.values()} == {("COMPLETED", "Completed")}
    assert message_of(runs["on-run-start"]) == "2 on-run-start hooks passed"
    assert message_of(runs["on-run-end"]) == "1 on-run-end hooks passed"
    assert runs["on-run-start"].end_time <= runs["model landed"].start_time
    assert runs["model doubled"].end_time <= runs["on-run-end"].start_time
    # The model read what on-run-start landed; on-run-end saw both nodes' results.
    assert postgres.query('select n from "hooked"."doubled"') == [(4,)]
    assert postgres.query('select results, succeeded from "hooked_landing"."build_log"') == [(2, 2)]
    # One result per project hook, under dbt's own id for it, as dbt build reports them.
    assert [(h.unique_id, h.status) for h in outcome.result.hook_results] == [
        ("operation.hooked.hooked-on-run-start-0", "success"),
        ("operation.hooked.hooked-on-run-start-1", "success"),
        ("operation.hooked.hooked-on-run-end-0", "success"),
    ]
    # The hooks' own dbt lines are on their task runs.
    start_lines = [r.message for r in logs(outcome.flow_run_id) if r.task_run_id == runs["on-run-start"].id]
    assert any("hooked.on-run-start.0" in line for line in start_lines), start_lines


def test_a_failing_on_run_end_hook_fails_the_build_with_dbts_message(
    tmp_path: Path, postgres: Any, dask_cluster: Any
) -> None:
    project = with_hooks(
        make_small_project(tmp_path, postgres, "hook_fail", "hook_fail", MODELS),
        START_HOOKS,
        ["select * from {{ target.schema }}_landing.no_such_table"],
    )
    postgres.drop_schemas("hook_fail_landing")

    outcome = orchestrate(project, dask_runner(dask_cluster))

    assert isinstance(outcome.error, PrefectDbtRunnerFailure)
    message = str(outcome.error)
    assert message.startswith(
        "dbt build failed\n"
        "Failures detected during invocation of dbt command 'build':\n"
        # The hook by dbt's own name for it, as the runner's summary names it.
        "Operation hook_fail-on-run-end-0 errored with message: \"hook_fail.on-run-end.0 failed, error:\n"
    ), message
    assert 'relation "hook_fail_landing.no_such_table" does not exist' in message
    runs = by_name(task_runs(outcome.flow_run_id))
    assert state_of(runs["on-run-end"]) == ("FAILED", "Failed")
    assert state_of(runs["model doubled"]) == ("COMPLETED", "Completed")


def test_the_packages_metadata_post_hook_puts_row_counts_and_columns_on_orchestrated_assets(
    tmp_path: Path, postgres: Any, dask_cluster: Any
) -> None:
    from dbt.cli.main import dbtRunner

    from support.prefect_api import asset_events, materializations

    project = with_hooks(make_small_project(tmp_path, postgres, "meta_orch", "meta_orch", MODELS), START_HOOKS, [])
    repo_root = Path(__file__).resolve().parents[1]
    (project / "packages.yml").write_text(f"packages:\n  - local: {repo_root}\n")
    with open(project / "dbt_project.yml", "a") as handle:
        # Tables: views get a row count only when they opt in.
        handle.write("models:\n  +materialized: table\n  +post-hook: \"{{ dbt_prefect.collect_metadata() }}\"\n")
    assert dbtRunner().invoke(["deps", "--project-dir", str(project), "--profiles-dir", str(project)]).success
    postgres.drop_schemas("meta_orch")

    outcome = orchestrate(project, dask_runner(dask_cluster))

    assert outcome.state.is_completed(), outcome.error
    succeeded = materializations(asset_events(outcome.flow_run_id))
    assert sorted(succeeded) == ["postgres://postgres/meta_orch/doubled", "postgres://postgres/meta_orch/landed"]
    landed = succeeded["postgres://postgres/meta_orch/landed"].payload
    assert landed["row_count"] == 1
    assert landed["columns"] == [{"name": "n", "data_type": "bigint", "description": ""}]
    assert succeeded["postgres://postgres/meta_orch/doubled"].payload["row_count"] == 1
    # The package's on-run-end hook (run history, off by default) runs once, after the nodes.
    runs = by_name(task_runs(outcome.flow_run_id))
    assert sorted(runs) == ["model doubled", "model landed", "on-run-end", "on-run-start"]


def test_lifecycle_hooks_fire_in_the_flow_as_on_the_runner(tmp_path: Path, postgres: Any, dask_cluster: Any) -> None:
    project = with_hooks(make_small_project(tmp_path, postgres, "py_hooks", "py_hooks", MODELS), START_HOOKS, [])
    postgres.drop_schemas("py_hooks_landing")
    seen: list[DbtHookContext] = []
    threads: list[str] = []

    def register(orchestrator: Any) -> None:
        orchestrator.on_run_start(seen.append)

        @orchestrator.post_model(select="doubled")
        def doubled_done(ctx: DbtHookContext) -> None:
            threads.append(threading.current_thread().name)
            seen.append(ctx)

        orchestrator.post_model(select="tag:no_such_tag")(seen.append)

        @orchestrator.on_run_end
        def broken_end(ctx: DbtHookContext) -> None:
            seen.append(ctx)
            raise RuntimeError("end hook broke")

    outcome = orchestrate(project, dask_runner(dask_cluster), register=register)

    assert outcome.state.is_completed(), outcome.error
    assert [ctx.event for ctx in seen] == ["run_start", "post_model", "run_end"]
    start, doubled, end = seen
    assert (start.command, start.args, start.node_ids) == ("build", ("build",), ())
    assert start.owner is outcome.orchestrator
    assert (doubled.node_id, doubled.status, doubled.error) == ("model.py_hooks.doubled", "success", None)
    assert doubled.node.name == "doubled" and doubled.result["event_data"]["status"] == "success"
    assert threads == ["dbt-prefect-hooks"]
    assert end.status == "success" and end.result == {"success": True}
    # dbt's run results: the nodes and the project's own hooks, as on the runner.
    assert sorted(end.run_results) == [
        "model.py_hooks.doubled",
        "model.py_hooks.landed",
        "operation.py_hooks.py_hooks-on-run-start-0",
        "operation.py_hooks.py_hooks-on-run-start-1",
    ]
    assert end.run_results["model.py_hooks.landed"]["status"] == "success"
    warnings = [r.message for r in logs(outcome.flow_run_id) if r.message.startswith("dbt hook ")]
    assert [w.split(";")[0] for w in warnings] == ["dbt hook broken_end raised during run_end"]
