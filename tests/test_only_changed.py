"""``invoke(["build"], only_changed=True)`` and ``dbt-prefect build --only-changed``: real
dbt on DuckDB, a real Prefect server, task runs and logs read back through the client.

One project copy and one state store go through a history of builds, in order (each
test checks one build of it): first run, nothing changed, a model edited, new source
rows, a failure and its retry, --full-refresh, a corrupt and an incomplete store, and a
narrower --select. The expected node sets are dbt's own (`dbt ls --select X+`).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from prefect import flow
from prefect.context import FlowRunContext

from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings, StateStoreError
from support.prefect_api import logs, poll, state_of, task_runs
from support.projects import make_shop_copy
from test_cli import DBT_PREFECT, cli_env, flow_run_named
from test_runner import EXPECTED_BUILD_TASK_RUNS

pytestmark = pytest.mark.usefixtures("prefect_server")

# dbt ls --select stg_products+ (the ephemeral int_order_payments is not run).
BELOW_STG_PRODUCTS = [
    "model customers",
    "model daily_order_summary",
    "model internal_order_audit",
    "model orders",
    "model product_revenue",
    "model stg_products",
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
    "unit_test test_customers_segments_and_lifetime_value",
]
# dbt ls --select orders+
BELOW_ORDERS = [
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
    "unit_test test_customers_segments_and_lifetime_value",
]
# dbt ls --select source:payments_app.payments+
BELOW_PAYMENTS = sorted(
    set(BELOW_ORDERS)
    | {
        "model stg_payments",
        "test accepted_values_stg_payments_payment_method__credit_card__bank_transfer__gift_card__coupon",
        "test relationships_stg_payments_order_id__order_id__ref_stg_orders_",
        "test source_not_null_payments_app_payments_id",
        "test source_unique_payments_app_payments_id",
        "test unique_stg_payments_payment_id",
    }
)
# dbt ls --select stg_customers+
BELOW_STG_CUSTOMERS = [
    "model customers",
    "snapshot customers_snapshot",
    "model stg_customers",
    "test accepted_values_customers_customer_segment__prospect__new__returning",
    "test not_null_customers_customer_id",
    "test relationships_stg_orders_customer_id__customer_id__ref_stg_customers_",
    "test unique_customers_customer_id",
    "test unique_stg_customers_customer_id",
    "unit_test test_customers_segments_and_lifetime_value",
]
RELATIONSHIPS = "test relationships_stg_payments_order_id__order_id__ref_stg_orders_"
UNCHANGED_LINE = "only_changed: 36 nodes are unchanged since the last successful build, so were not selected: "


@dataclass
class Build:
    flow_run_id: Any
    task_runs: dict[str, Any]  # by name
    error: BaseException | None

    @property
    def names(self) -> list[str]:
        return sorted(self.task_runs)

    def states(self) -> dict[str, str]:
        return {name: state_of(run)[1] for name, run in self.task_runs.items()}

    def log_lines(self, containing: str) -> list[Any]:
        found = poll(lambda: logs(self.flow_run_id), lambda ls: any(containing in line.message for line in ls))
        return [line for line in found if containing in line.message]


def build(project: Path, store: Any, *args: str, raise_on_failure: bool = True) -> Build:
    """`dbt build <args>` with only_changed, in a fresh flow run."""
    captured: dict[str, Any] = {}

    @flow(name="only-changed-test")
    def dbt_flow() -> None:
        captured["flow_run_id"] = FlowRunContext.get().flow_run.id
        runner = PrefectDbtRunner(
            settings=PrefectDbtSettings(project_dir=project, profiles_dir=project),
            state_store=store,
            raise_on_failure=raise_on_failure,
        )
        try:
            runner.invoke(["build", *args], only_changed=True)
        except Exception as exc:
            captured["error"] = exc

    dbt_flow()
    runs = task_runs(captured["flow_run_id"])
    return Build(captured["flow_run_id"], {run.name: run for run in runs}, captured.get("error"))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def land_payment(project: Path, payment_id: int, amount_cents: int, order_id: int = 1) -> None:
    """A payment landed now, as an EL tool would: the source's max(_loaded_at) moves on."""
    with duckdb.connect(str(project.parent / "shop.duckdb")) as con:
        con.execute(
            f"insert into payments_app.payments values ({payment_id}, {order_id}, 'coupon', {amount_cents},"
            " timestamp '2024-01-03', current_timestamp)"
        )


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The project and store, and each build of the history as a test asks for it (in order)."""
    root = tmp_path_factory.mktemp("only-changed")
    return {"project": make_shop_copy(root), "store": root / "state", "builds": {}}


def step(history: dict[str, Any], name: str) -> Build:
    assert name in history["builds"], f"the build {name!r} of the history did not run (run the whole module)"
    return history["builds"][name]


def test_the_first_build_with_no_stored_state_builds_everything_and_says_so(history) -> None:
    first = history["builds"]["first"] = build(history["project"], history["store"])
    assert first.error is None
    assert first.names == EXPECTED_BUILD_TASK_RUNS
    assert set(first.states().values()) == {"Completed"}
    [line] = first.log_lines("no state stored in")
    assert line.level == 30  # a warning: a first run and an emptied store look alike
    assert line.message == (
        f"only_changed: no state stored in {history['store']} (a first run, or the store was emptied or moved): "
        "building everything"
    )
    assert sorted(p.name for p in history["store"].iterdir()) == ["manifest.json", "run_results.json", "sources.json"]


def test_a_second_build_of_an_unchanged_project_rebuilds_nothing(history) -> None:
    step(history, "first")
    again = history["builds"]["unchanged"] = build(history["project"], history["store"])
    assert again.error is None
    assert again.names == []
    selection = again.log_lines("building what changed")[0].message
    assert selection.endswith(
        "--select state:modified+ result:error+ result:fail+ result:skipped+ source_status:fresher+"
    )
    # Every node the first build ran is named, with the reason it was left out.
    [line] = again.log_lines("nodes are unchanged")
    assert line.message == UNCHANGED_LINE + ", ".join(sorted(EXPECTED_BUILD_TASK_RUNS))


def test_editing_one_model_rebuilds_it_and_its_descendants_and_nothing_else(history) -> None:
    step(history, "unchanged")
    project = history["project"]
    edit(project / "models" / "staging" / "stg_products.sql", "select", "-- edited\nselect")
    edited = history["builds"]["edited"] = build(project, history["store"])
    assert edited.error is None
    assert edited.names == sorted(BELOW_STG_PRODUCTS)
    assert set(edited.states().values()) == {"Completed"}
    [line] = edited.log_lines("nodes are unchanged")
    assert line.message.startswith(f"only_changed: {36 - len(BELOW_STG_PRODUCTS)} nodes are unchanged")
    assert "model stg_orders" in line.message and "model stg_products," not in line.message


def test_new_rows_in_a_source_rebuild_exactly_the_nodes_below_it(history) -> None:
    step(history, "edited")
    land_payment(history["project"], 900, 1000)
    landed = history["builds"]["landed"] = build(history["project"], history["store"])
    assert landed.error is None
    assert landed.names == BELOW_PAYMENTS
    assert set(landed.states().values()) == {"Completed"}


def test_a_node_that_failed_last_time_is_rebuilt_with_the_nodes_it_skipped(history) -> None:
    step(history, "landed")
    project = history["project"]
    # A fresh payment for an order that does not exist: stg_payments' relationships test
    # fails, and the build skips everything below stg_payments.
    land_payment(project, 901, 1000, order_id=9999)
    failed = history["builds"]["failed"] = build(project, history["store"], raise_on_failure=False)
    states = failed.states()
    assert failed.names == BELOW_PAYMENTS
    assert states[RELATIONSHIPS] == "Failed"
    assert sorted(name for name, state in states.items() if state == "Skipped") == sorted(BELOW_ORDERS)
    assert failed.log_lines(f"; {1 + len(BELOW_ORDERS)} nodes that did not succeed stay marked to be built next time")

    # The data is fixed, no source is fresher and no code changed: the failed test and
    # the nodes the build skipped are built again, and nothing else.
    with duckdb.connect(str(project.parent / "shop.duckdb")) as con:
        con.execute("delete from payments_app.payments where id = 901")
    retried = history["builds"]["retried"] = build(project, history["store"])
    assert retried.error is None
    assert retried.names == sorted([RELATIONSHIPS, *BELOW_ORDERS])
    assert set(retried.states().values()) == {"Completed"}
    assert build(project, history["store"]).names == []


def test_full_refresh_ignores_the_stored_state_and_saves_the_new_one(history) -> None:
    step(history, "retried")
    store = history["store"]
    before = (store / "run_results.json").stat().st_mtime_ns
    refreshed = build(history["project"], store, "--full-refresh")
    assert refreshed.error is None
    assert refreshed.names == EXPECTED_BUILD_TASK_RUNS
    assert refreshed.log_lines("--full-refresh builds everything, ignoring the state stored in")
    assert (store / "run_results.json").stat().st_mtime_ns > before
    args = json.loads((store / "run_results.json").read_text())["args"]
    assert args["full_refresh"] is True
    history["builds"]["refreshed"] = refreshed


def test_a_corrupt_store_gives_a_warning_and_a_full_build(history) -> None:
    step(history, "refreshed")
    store = history["store"]
    (store / "manifest.json").write_text('{"metadata": {"dbt_schema_version": ')
    corrupt = build(history["project"], store)
    assert corrupt.names == EXPECTED_BUILD_TASK_RUNS
    [line] = corrupt.log_lines("cannot be used")
    assert line.level == 30
    assert line.message.startswith(f"only_changed: the state stored in {store} cannot be used (manifest.json: ")
    assert line.message.endswith("): building everything")
    # The full build stored a good state again.
    json.loads((store / "manifest.json").read_text())
    history["builds"]["corrupt"] = corrupt


def test_an_incomplete_store_gives_a_warning_and_a_full_build(history) -> None:
    step(history, "corrupt")
    store = history["store"]
    (store / "run_results.json").unlink()
    incomplete = build(history["project"], store)
    assert incomplete.names == EXPECTED_BUILD_TASK_RUNS
    [line] = incomplete.log_lines("cannot be used")
    assert line.level == 30
    assert line.message == (
        f"only_changed: the state stored in {store} cannot be used (run_results.json missing): building everything"
    )
    history["builds"]["incomplete"] = incomplete


def test_a_narrower_select_builds_its_share_and_leaves_the_rest_for_next_time(history) -> None:
    step(history, "incomplete")
    project, store = history["project"], history["store"]
    edit(project / "models" / "staging" / "stg_products.sql", "-- edited\n", "-- edited twice\n")
    edit(project / "models" / "staging" / "stg_customers.sql", "select", "-- edited\nselect")
    narrow = build(project, store, "--select", "stg_products+")
    # Intersection: what changed, within the user's own selection.
    assert narrow.names == sorted(BELOW_STG_PRODUCTS)
    assert narrow.log_lines("or outside the build's own --select")
    # That build covered part of the changes, so the stored manifest stayed: the next
    # build still sees every change since the last full one (stg_products again too).
    rest = build(project, store)
    assert rest.names == sorted(set(BELOW_STG_PRODUCTS) | set(BELOW_STG_CUSTOMERS))
    assert build(project, store).names == []


def test_only_changed_without_a_store_is_a_clear_error(tmp_path: Path) -> None:
    runner = PrefectDbtRunner(settings=PrefectDbtSettings(project_dir=tmp_path, profiles_dir=tmp_path))
    (tmp_path / "dbt_project.yml").write_text("name: x\n")
    with pytest.raises(StateStoreError) as missing:
        runner.invoke(["build"], only_changed=True)
    assert str(missing.value).startswith("only_changed needs a state store to compare against: none was given (")
    runner.state_store = tmp_path / "state"
    with pytest.raises(StateStoreError, match=r"only_changed works with dbt build, not dbt run \("):
        runner.invoke(["run"], only_changed=True)


def test_the_cli_builds_only_what_changed_with_a_block_as_the_store(tmp_path: Path) -> None:
    from prefect.filesystems import LocalFileSystem

    block_name = f"only-changed-{uuid.uuid4().hex[:8]}"
    LocalFileSystem(basepath=str(tmp_path / "block")).save(block_name)
    project = make_shop_copy(tmp_path)
    env = cli_env(DBT_PREFECT_STATE_STORE=f"local-file-system/{block_name}")

    def cli_build() -> Build:
        name = f"cli-{uuid.uuid4().hex[:10]}"
        argv = [
            str(DBT_PREFECT),
            "build",
            "--only-changed",
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(project),
            "--flow-run-name",
            name,
        ]
        process = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert process.returncode == 0, process.stdout + process.stderr
        run_id = flow_run_named(name).id
        return Build(run_id, {run.name: run for run in task_runs(run_id)}, None)

    assert cli_build().names == EXPECTED_BUILD_TASK_RUNS
    stored = tmp_path / "block" / "dbt-prefect-state" / "shop"
    assert sorted(p.name for p in stored.iterdir()) == ["manifest.json", "run_results.json", "sources.json"]
    again = cli_build()
    assert again.names == []
    assert again.log_lines(UNCHANGED_LINE)

    # Without a store: a usage error before any flow run.
    no_store = subprocess.run(
        [str(DBT_PREFECT), "build", "--only-changed", "--project-dir", str(project), "--profiles-dir", str(project)],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert no_store.returncode == 2
    assert "only_changed needs a state store" in no_store.stdout + no_store.stderr
