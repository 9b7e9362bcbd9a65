"""PrefectDbtRunner end to end: real dbt on DuckDB, a real Prefect server, read back through the client."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.context import FlowRunContext

from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings, PrefectDbtRunnerFailure
from support.prefect_api import by_name, logs, message_of, poll, state_of, task_runs, task_runs_by_id

from support.projects import make_shop_copy

SEEDS = ["raw_customers", "raw_orders", "raw_products"]
MODELS = [
    "stg_customers", "stg_orders", "stg_payments", "stg_products",
    "orders", "customers", "product_revenue", "daily_order_summary", "internal_order_audit",
]
TESTS = [
    "accepted_values_customers_customer_segment__prospect__new__returning",
    "accepted_values_stg_orders_status__placed__shipped__completed__returned",
    "accepted_values_stg_payments_payment_method__credit_card__bank_transfer__gift_card__coupon",
    "assert_daily_summary_matches_orders",
    "assert_product_revenue_not_negative",
    "not_null_customers_customer_id",
    "not_null_daily_order_summary_order_date",
    "not_null_orders_order_id",
    "not_null_raw_customers_id",
    "not_null_stg_orders_order_id",
    "relationships_stg_orders_customer_id__customer_id__ref_stg_customers_",
    "relationships_stg_payments_order_id__order_id__ref_stg_orders_",
    "source_not_null_payments_app_payments_id",
    "source_unique_payments_app_payments_id",
    "unique_customers_customer_id",
    "unique_daily_order_summary_order_date",
    "unique_orders_order_id",
    "unique_product_revenue_product_id",
    "unique_stg_customers_customer_id",
    "unique_stg_orders_order_id",
    "unique_stg_payments_payment_id",
    "unique_stg_products_product_id",
]
EXPECTED_BUILD_TASK_RUNS = sorted(
    [f"seed {n}" for n in SEEDS]
    + [f"model {n}" for n in MODELS]
    + ["snapshot customers_snapshot"]
    + [f"test {n}" for n in TESTS]
    + ["unit_test test_customers_segments_and_lifetime_value"]
)
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

pytestmark = pytest.mark.usefixtures("prefect_server")


def runner_for(project: Path, **kwargs: Any) -> PrefectDbtRunner:
    return PrefectDbtRunner(settings=PrefectDbtSettings(project_dir=project, profiles_dir=project), **kwargs)


@dataclass
class FlowOutcome:
    flow_run_id: Any
    state: Any
    seen_at_return: list[Any]  # task runs read the instant invoke() returned, without waiting
    result: Any = None
    error: BaseException | None = None


def run_in_flow(project: Path, args: list[str], **runner_kwargs: Any) -> FlowOutcome:
    """Invoke dbt inside a fresh flow run and read its task runs the moment invoke returns."""
    captured: dict[str, Any] = {}

    @flow(name="dbt-prefect-test")
    def dbt_flow() -> None:
        captured["flow_run_id"] = FlowRunContext.get().flow_run.id
        runner = runner_for(project, **runner_kwargs)
        try:
            captured["result"] = runner.invoke(args)
        except BaseException as exc:
            captured["error"] = exc
            raise
        finally:
            captured["seen"] = task_runs(captured["flow_run_id"])

    state = dbt_flow(return_state=True)
    return FlowOutcome(
        flow_run_id=captured["flow_run_id"],
        state=state,
        seen_at_return=captured["seen"],
        result=captured.get("result"),
        error=captured.get("error"),
    )


@pytest.fixture(scope="module")
def green_build(tmp_path_factory: pytest.TempPathFactory) -> FlowOutcome:
    project = make_shop_copy(tmp_path_factory.mktemp("green"))
    return run_in_flow(project, ["build"])


def test_every_executed_node_becomes_one_task_run_named_after_it(green_build: FlowOutcome) -> None:
    names = sorted(run.name for run in green_build.seen_at_return)
    assert names == EXPECTED_BUILD_TASK_RUNS
    assert len(names) == 36


def test_ephemeral_models_and_hooks_get_no_task_run(green_build: FlowOutcome) -> None:
    names = {run.name for run in green_build.seen_at_return}
    assert "model int_order_payments" not in names
    assert not any("on-run-start" in name for name in names)


def test_task_runs_are_terminal_and_readable_the_moment_invoke_returns(green_build: FlowOutcome) -> None:
    assert green_build.state.is_completed()
    states = {state_of(run) for run in green_build.seen_at_return}
    assert states == {("COMPLETED", "Completed")}


def test_upstream_task_runs_are_dependencies_through_ephemeral_models(green_build: FlowOutcome) -> None:
    runs = by_name(green_build.seen_at_return)
    names_by_id = {run.id: run.name for run in green_build.seen_at_return}

    def upstream(name: str) -> set[str]:
        return {names_by_id[i.id] for i in runs[name].task_inputs.get("wait_for", [])}

    # orders reads stg_orders and stg_products directly, and stg_payments through the
    # ephemeral int_order_payments.
    assert upstream("model orders") == {"model stg_orders", "model stg_products", "model stg_payments"}
    assert upstream("test unique_orders_order_id") == {"model orders"}
    assert upstream("seed raw_orders") == set()


def test_task_runs_persist_no_results(green_build: FlowOutcome) -> None:
    for run in green_build.seen_at_return:
        assert run.state.data is None
        assert run.cache_key is None


def test_node_logs_go_to_the_node_task_run_and_run_logs_to_the_flow_run(green_build: FlowOutcome) -> None:
    records = logs(green_build.flow_run_id)
    runs = by_name(green_build.seen_at_return)
    orders_lines = [r.message for r in records if r.task_run_id == runs["model orders"].id]
    assert any(re.search(r"START sql table model main_marts\.orders", m) for m in orders_lines)
    assert any(re.search(r"OK created sql table model main_marts\.orders", m) for m in orders_lines)
    flow_lines = [r.message for r in records if r.task_run_id is None]
    assert any(m.startswith("Found 10 models, 22 data tests, 3 seeds") for m in flow_lines)
    assert any(m.startswith("Concurrency: 4 threads") for m in flow_lines)
    assert any(m.startswith("Done. PASS=38 WARN=0 ERROR=0 SKIP=0") for m in flow_lines)
    # Run-level lines never land on a node's task run.
    assert not any(m.startswith("Found 10 models") for m in orders_lines)


def test_log_records_keep_the_time_dbt_emitted_them(green_build: FlowOutcome) -> None:
    records = logs(green_build.flow_run_id)
    runs = by_name(green_build.seen_at_return)
    for name in ("model orders", "seed raw_orders", "test unique_orders_order_id"):
        run = runs[name]
        lines = [r for r in records if r.task_run_id == run.id]
        assert len(lines) == 2, [r.message for r in lines]
        start, end = sorted(lines, key=lambda r: r.timestamp)
        # dbt's START line is emitted after the node starts and its result line before it
        # finishes; timestamps taken when the lines were processed would fall outside.
        assert run.start_time <= start.timestamp <= end.timestamp <= run.end_time
        assert end.timestamp - start.timestamp < dt.timedelta(seconds=5)


def state_names(task_run_id: Any) -> list[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        states = client.read_task_run_states(task_run_id)
    return [state.name for state in sorted(states, key=lambda state: state.timestamp)]


def test_a_node_running_longer_than_a_second_shows_as_running_and_a_quick_one_is_one_state(tmp_path: Path) -> None:
    project = make_shop_copy(tmp_path)
    seen: dict[str, Any] = {}

    def hold_orders(msg: Any) -> None:
        # Runs in dbt's thread: keeps model orders running until the server shows it Running.
        if msg.info.name == "NodeStart" and msg.data.node_info.unique_id == "model.shop.orders":
            seen["while_running"] = poll(
                lambda: by_name(task_runs(seen["flow_run_id"])).get("model orders"),
                lambda run: run is not None and run.state_name == "Running",
                timeout=30,
            )

    @flow(name="dbt-prefect-test")
    def dbt_flow() -> None:
        seen["flow_run_id"] = FlowRunContext.get().flow_run.id
        runner_for(project).invoke(
            ["build", "--select", "+orders", "--exclude", "resource_type:test", "resource_type:unit_test"],
            callbacks=[hold_orders],
        )
        seen["runs"] = by_name(task_runs(seen["flow_run_id"]))

    dbt_flow()
    assert state_of(seen["while_running"]) == ("RUNNING", "Running")
    runs = seen["runs"]
    assert sorted(runs) == [
        "model orders", "model stg_orders", "model stg_payments", "model stg_products", "seed raw_orders", "seed raw_products",
    ]
    orders = runs["model orders"]
    assert state_names(orders.id) == ["Running", "Completed"]
    assert orders.total_run_time >= dt.timedelta(seconds=1)
    # A quick node is recorded by its terminal state alone, with its start and run time.
    quick = runs["model stg_orders"]
    assert state_names(quick.id) == ["Completed"]
    assert quick.run_count == 1
    assert quick.start_time is not None and quick.start_time < quick.end_time
    assert quick.total_run_time == quick.end_time - quick.start_time


def test_a_failing_test_fails_its_task_run_and_raises_one_summary(tmp_path: Path) -> None:
    project = make_shop_copy(tmp_path)
    outcome = run_in_flow(project, ["build", "--vars", "{fail_demo_test: true}"])
    assert isinstance(outcome.error, PrefectDbtRunnerFailure)
    assert str(outcome.error) == (
        "Failures detected during invocation of dbt command 'build':\n"
        'Test assert_demo_failure failed with message: "Got 10 results, configured to fail if != 0"'
    )
    assert outcome.state.is_failed()
    runs = by_name(outcome.seen_at_return)
    assert len(runs) == 37
    assert state_of(runs["test assert_demo_failure"]) == ("FAILED", "Failed")
    assert message_of(runs["test assert_demo_failure"]) == "Got 10 results, configured to fail if != 0"
    others = {state_of(run) for name, run in runs.items() if name != "test assert_demo_failure"}
    assert others == {("COMPLETED", "Completed")}


def test_raise_on_failure_false_returns_the_dbt_result(tmp_path: Path) -> None:
    project = make_shop_copy(tmp_path)
    outcome = run_in_flow(
        project,
        ["build", "--select", "+product_revenue+", "--vars", "{fail_demo_test: true}"],
        raise_on_failure=False,
    )
    assert outcome.error is None
    assert outcome.state.is_completed()
    assert outcome.result.success is False
    statuses = {r.node.name: str(r.status) for r in outcome.result.result.results}
    assert statuses["assert_demo_failure"] == "fail"
    runs = by_name(outcome.seen_at_return)
    assert state_of(runs["test assert_demo_failure"]) == ("FAILED", "Failed")


def test_an_erroring_model_fails_and_its_descendants_are_skipped(tmp_path: Path) -> None:
    project = make_shop_copy(tmp_path)
    stg_products = project / "models" / "staging" / "stg_products.sql"
    stg_products.write_text("select no_such_column from {{ ref('raw_products') }}\n")
    outcome = run_in_flow(project, ["build"])
    assert isinstance(outcome.error, PrefectDbtRunnerFailure)
    message = str(outcome.error)
    assert message.startswith("Failures detected during invocation of dbt command 'build':\nModel stg_products errored with message: \"")
    assert "no_such_column" in message
    # One failed node, one entry; skipped nodes are not failures.
    assert message.count(" with message: ") == 1
    runs = by_name(outcome.seen_at_return)
    assert state_of(runs["model stg_products"]) == ("FAILED", "Failed")
    assert "no_such_column" in message_of(runs["model stg_products"])
    skipped = sorted(
        name for name, run in runs.items() if run.state_name == "Skipped" and not name.startswith("unit_test")
    )
    assert skipped == [
        "model customers",
        "model daily_order_summary",
        "model internal_order_audit",
        "model orders",
        "model product_revenue",
        "test accepted_values_customers_customer_segment__prospect__new__returning",
        "test assert_daily_summary_matches_orders",
        "test assert_product_revenue_not_negative",
        "test not_null_customers_customer_id",
        "test not_null_daily_order_summary_order_date",
        "test not_null_orders_order_id",
        "test unique_customers_customer_id",
        "test unique_daily_order_summary_order_date",
        "test unique_orders_order_id",
        "test unique_product_revenue_product_id",
        "test unique_stg_products_product_id",
    ]
    # The snapshot reads stg_customers only. Whether dbt skips the unit test of customers
    # depends on thread timing in dbt itself; it only has to end in a terminal state.
    assert state_of(runs["unit_test test_customers_segments_and_lifetime_value"]) in {
        ("COMPLETED", "Completed"),
        ("COMPLETED", "Skipped"),
    }
    assert state_of(runs["snapshot customers_snapshot"]) == ("COMPLETED", "Completed")
    assert all(runs[name].state_type.value == "COMPLETED" for name in skipped)
    assert message_of(runs["model orders"]) == "Skipped because model stg_products finished with status error"
    assert {run.state_type.value for run in outcome.seen_at_return} <= TERMINAL


def test_retry_recipe_reruns_only_what_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_shop_copy(tmp_path)
    # A model that fails while the upstream system is "down" and works once it is back.
    (project / "models" / "marts" / "flaky_orders.sql").write_text(
        "{% if env_var('SHOP_UPSTREAM_DOWN', 'no') == 'yes' %}\n"
        "select * from upstream_system_is_down\n"
        "{% else %}\nselect order_id from {{ ref('orders') }}\n{% endif %}\n"
    )
    (project / "models" / "marts" / "flaky_child.sql").write_text("select * from {{ ref('flaky_orders') }}\n")
    from prefect.runtime.flow_run import get_run_count

    attempts: list[tuple[int, list[str]]] = []

    @flow(retries=2, retry_delay_seconds=0)
    def build_with_retries() -> None:
        runner = runner_for(project)
        run_count = get_run_count()
        monkeypatch.setenv("SHOP_UPSTREAM_DOWN", "yes" if run_count == 1 else "no")
        try:
            if run_count == 1:
                runner.invoke(["build"])
            else:
                runner.invoke(["retry"])
        finally:
            flow_run_id = FlowRunContext.get().flow_run.id
            attempts.append((run_count, [run.name for run in task_runs(flow_run_id)]))

    state = build_with_retries(return_state=True)
    assert state.is_completed()
    assert [count for count, _ in attempts] == [1, 2]
    first_names, both_names = attempts[0][1], attempts[1][1]
    assert len(first_names) == 38
    second_attempt = sorted(both_names)
    for name in first_names:
        second_attempt.remove(name)
    assert second_attempt == ["model flaky_child", "model flaky_orders"]
    final = task_runs(state.state_details.flow_run_id)
    latest = {}
    for run in sorted(final, key=lambda r: r.start_time):
        latest[run.name] = run
    assert state_of(latest["model flaky_orders"]) == ("COMPLETED", "Completed")
    assert state_of(latest["model flaky_child"]) == ("COMPLETED", "Completed")


def test_outside_a_flow_dbt_runs_without_task_runs_and_still_logs(
    shop_project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    caplog.set_level("INFO", logger="prefect.dbt")
    result = runner_for(shop_project).invoke(["seed"])
    assert result.success is True
    lines = [r.getMessage() for r in caplog.records if r.name == "prefect.dbt"]
    assert any("OK loaded seed file main_raw.raw_orders" in line for line in lines)
    with get_client(sync_client=True) as client:
        orphans = client.read_task_runs(
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="seed raw_"), flow_run_id=None)
        )
    assert [run for run in orphans if run.flow_run_id is None] == []
    runner_for(shop_project).invoke(["run", "--select", "+product_revenue"])
    with pytest.raises(PrefectDbtRunnerFailure) as raised:
        runner_for(shop_project).invoke(["test", "--select", "assert_demo_failure", "--vars", "{fail_demo_test: true}"])
    assert str(raised.value) == (
        "Failures detected during invocation of dbt command 'test':\n"
        'Test assert_demo_failure failed with message: "Got 10 results, configured to fail if != 0"'
    )


def test_every_dbt_command_runs_through_invoke(shop_project: Path) -> None:
    commands = [
        ["deps"],
        ["debug"],
        ["parse"],
        ["ls", "--resource-type", "model"],
        ["compile", "--select", "orders"],
        ["seed"],
        ["run", "--select", "staging"],
        ["test", "--select", "staging"],
        ["snapshot"],
        ["build", "--select", "stg_orders"],
        ["retry"],
        ["run-operation", "create_payments_source"],
        ["source", "freshness"],
        ["docs", "generate"],
    ]
    outcomes: dict[str, Any] = {}
    new_task_runs: dict[str, list[str]] = {}

    @flow
    def every_command() -> None:
        runner = runner_for(shop_project)
        flow_run_id = FlowRunContext.get().flow_run.id
        seen: set[Any] = set()
        for args in commands:
            key = " ".join(args)
            outcomes[key] = runner.invoke(args)
            runs = task_runs(flow_run_id)
            new_task_runs[key] = sorted(run.name for run in runs if run.id not in seen)
            seen.update(run.id for run in runs)

    state = every_command(return_state=True)
    assert state.is_completed(), state.message
    assert {key: result.success for key, result in outcomes.items()} == {" ".join(a): True for a in commands}
    listed = outcomes["ls --resource-type model"].result
    assert len(listed) == 10 and "shop.marts.orders" in listed
    for command in ("deps", "debug", "parse", "ls --resource-type model", "run-operation create_payments_source"):
        assert new_task_runs[command] == [], command
    assert new_task_runs["seed"] == ["seed raw_customers", "seed raw_orders", "seed raw_products"]
    assert new_task_runs["snapshot"] == ["snapshot customers_snapshot"]
    assert new_task_runs["run --select staging"] == [f"model {m}" for m in sorted(MODELS) if m.startswith("stg_")]
    assert new_task_runs["source freshness"] == ["source payments"]
    assert new_task_runs["build --select stg_orders"] == [
        "model stg_orders",
        "test accepted_values_stg_orders_status__placed__shipped__completed__returned",
        "test not_null_stg_orders_order_id",
        "test relationships_stg_orders_customer_id__customer_id__ref_stg_customers_",
        "test relationships_stg_payments_order_id__order_id__ref_stg_orders_",
        "test unique_stg_orders_order_id",
    ]
    # retry after a green build has nothing to rerun.
    assert new_task_runs["retry"] == []
    flow_run_id = state.state_details.flow_run_id
    assert {run.state_type.value for run in task_runs(flow_run_id)} <= TERMINAL


def make_payments_stale(project: Path) -> None:
    sources = project / "models" / "staging" / "_sources.yml"
    sources.write_text(
        sources.read_text().replace(
            "warn_after: {count: 30, period: day}",
            "warn_after: {count: 1, period: minute}\n            error_after: {count: 1, period: minute}",
        )
    )
    import duckdb

    # The on-run-start hook lands the source table.
    result = runner_for(project).invoke(["seed", "--select", "raw_orders"])
    assert result.success
    db_path = re.search(r"path: (.+)", (project / "profiles.yml").read_text()).group(1).strip().strip('"')
    with duckdb.connect(db_path) as con:
        con.execute("update payments_app.payments set _loaded_at = now() - interval 2 hour")


STALE = re.compile(r"source is stale: last loaded (\d+) seconds ago")


def test_a_stale_source_freshness_failure_is_summarised_not_crashed(shop_project: Path) -> None:
    make_payments_stale(shop_project)
    with pytest.raises(PrefectDbtRunnerFailure) as raised:
        runner_for(shop_project).invoke(["source", "freshness"])
    message = str(raised.value)
    assert message.startswith("Failures detected during invocation of dbt command 'source freshness':\n")
    assert re.search(r'Source payments_app\.payments errored with message: "source is stale: last loaded \d+ seconds ago"', message), message


def test_a_stale_sources_task_run_and_report_carry_dbts_message(shop_project: Path) -> None:
    make_payments_stale(shop_project)
    outcome = run_in_flow(shop_project, ["source", "freshness"], raise_on_failure=False)
    # The project runs its hooks with freshness too (source_freshness_run_project_hooks).
    (entry,) = [r for r in outcome.result.result.results if r.node.unique_id == "source.shop.payments_app.payments"]
    expected = f"source is stale: last loaded {entry.age:.0f} seconds ago"
    assert STALE.fullmatch(expected) and int(STALE.fullmatch(expected)[1]) >= 7200
    run = by_name(outcome.seen_at_return)["source payments"]
    assert state_of(run) == ("FAILED", "Failed")
    assert message_of(run) == expected
    with get_client(sync_client=True) as client:
        (report,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["dbt-shop-source-freshness"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[outcome.flow_run_id]),
            )
        )
    assert f"```text\n{expected}\n```" in report.data

def test_invoked_inside_a_task_the_node_task_runs_are_its_children(shop_project: Path) -> None:
    from prefect import task
    from prefect.context import TaskRunContext

    seen: dict[str, Any] = {}

    @task(name="dbt seeds", task_run_name="dbt seeds")
    def seed_task() -> None:
        seen["parent_id"] = TaskRunContext.get().task_run.id
        runner_for(shop_project).invoke(["seed"])

    @flow
    def with_task() -> None:
        seen["flow_run_id"] = FlowRunContext.get().flow_run.id
        seed_task()

    with_task()
    runs = by_name(task_runs(seen["flow_run_id"]))
    assert sorted(runs) == ["dbt seeds", "seed raw_customers", "seed raw_orders", "seed raw_products"]
    for name in ("seed raw_customers", "seed raw_orders", "seed raw_products"):
        assert [i.id for i in runs[name].task_inputs["__parents__"]] == [seen["parent_id"]]
        assert state_of(runs[name]) == ("COMPLETED", "Completed")
    parent_lines = [r.message for r in logs(seen["flow_run_id"]) if r.task_run_id == seen["parent_id"]]
    assert any(m.startswith("Found 10 models") for m in parent_lines)


def test_a_failing_run_operation_is_summarised_with_dbts_error(shop_project: Path) -> None:
    (shop_project / "macros" / "broken_operation.sql").write_text(
        "{% macro broken_operation() %}{% do run_query('select * from no_such_table') %}{% endmacro %}\n"
    )
    with pytest.raises(PrefectDbtRunnerFailure) as raised:
        runner_for(shop_project).invoke(["run-operation", "broken_operation"])
    message = str(raised.value)
    assert message.startswith(
        "Failures detected during invocation of dbt command 'run-operation':\n"
        'Operation broken_operation errored with message: "'
    )
    assert "no_such_table" in message
