"""Lifecycle hooks on PrefectDbtRunner: real dbt on DuckDB, a real Prefect server.

The official page's examples are read from ../shared/reference at test time and run with
only their import changed, so the API stays the one users switch from.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from dbt.cli.main import dbtRunner
from prefect import flow
from prefect.context import FlowRunContext

from dbt_prefect import DbtHookContext, PrefectDbtRunner, PrefectDbtSettings
from support.prefect_api import logs
from support.projects import REPO_ROOT, make_shop_copy

pytestmark = pytest.mark.usefixtures("prefect_server")

OFFICIAL_PAGE = REPO_ROOT.parent / "shared" / "reference" / "prefect-dbt-runner-docs-current.mdx"
MARTS = ["model.shop.customers", "model.shop.daily_order_summary", "model.shop.orders", "model.shop.product_revenue"]
MODELS_RUN = sorted(
    [
        *MARTS,
        "model.shop.internal_order_audit",
        "model.shop.stg_customers",
        "model.shop.stg_orders",
        "model.shop.stg_payments",
        "model.shop.stg_products",
    ]
)


def official_examples() -> list[str]:
    """The python blocks of the official "Lifecycle hooks" section, in order."""
    text = OFFICIAL_PAGE.read_text(encoding="utf-8")
    section = text.split("## Lifecycle hooks", 1)[1].split("## See also", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def with_our_import(code: str) -> str:
    changed = code.replace("from prefect_dbt import", "from dbt_prefect import")
    assert "prefect_dbt" not in changed
    return changed


def dbt_result_ids(project: Path) -> list[str]:
    """The unique_ids of dbt's own run_results.json for the last command."""
    data = json.loads((project / "target" / "run_results.json").read_text())
    return [entry["unique_id"] for entry in data["results"]]


def dbt_ls(project: Path, selector: str) -> list[str]:
    """What dbt's own `dbt ls` selects, the reference for select=."""
    listed = dbtRunner().invoke(
        ["ls", "--select", selector, "--output", "json", "--output-keys", "unique_id", "--resource-type", "all",
         "--project-dir", str(project), "--profiles-dir", str(project), "--log-level", "none"]
    )
    assert listed.success, listed.exception
    return sorted(json.loads(line)["unique_id"] for line in listed.result)


def test_the_official_examples_run_unchanged_with_our_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = official_examples()
    assert len(examples) == 5
    project = make_shop_copy(tmp_path)
    monkeypatch.chdir(project)  # the examples use PrefectDbtSettings' defaults: the working directory
    printed: list[list[str]] = []
    for code in examples:
        exec(compile(with_our_import(code), "official-example", "exec"), {"__name__": "__main__"})
        printed.append([line for line in capsys.readouterr().out.splitlines() if line.strip()])
    run_ids = dbt_result_ids(project)

    # 1: on_run_start, post_model(select="tag:critical") (silent: nothing fails), on_run_end(select="tag:marts").
    assert printed[0] == [
        "Starting dbt command: build with args: ('build',)",
        "Run finished with status: success",
        f"Matched nodes: {len(run_ids)}",
    ]
    # 2: only a failing critical model would be reported; 3: notify() and 4's print are
    # placeholders or silent on a green build; 5: before_run prints how many mart models it saw.
    assert printed[1] == []
    assert printed[2] == []
    assert printed[3] == []
    # ctx.node_ids is empty at on_run_start (the official semantics); post_model(tag:pii)
    # matches nothing; on_run_end(tag:marts) fires because mart models ran.
    assert printed[4] == [
        "about to run 0 mart models",
        "marts touched in command 'build'; status=success",
    ]


def run_with_hooks(
    project: Path, args: list[str], register: Any, state_store: Path | None = None, **invoke_kwargs: Any
) -> tuple[Any, list[DbtHookContext], Any]:
    runner = PrefectDbtRunner(
        settings=PrefectDbtSettings(project_dir=project, profiles_dir=project),
        raise_on_failure=False,
        state_store=state_store,
    )
    seen: list[DbtHookContext] = []
    register(runner, seen)

    @flow
    def build() -> Any:
        return runner.invoke(args, **invoke_kwargs), FlowRunContext.get().flow_run.id

    result, flow_run_id = build()
    return result, seen, flow_run_id


def test_post_model_fires_once_per_model_with_dbts_outcome_on_a_thread_of_its_own(tmp_path: Path) -> None:
    project = make_shop_copy(tmp_path)
    (project / "models" / "staging" / "stg_products.sql").write_text(
        "select no_such_column from {{ ref('raw_products') }}\n"
    )
    threads: list[str] = []

    def register(runner: PrefectDbtRunner, seen: list[DbtHookContext]) -> None:
        @runner.post_model
        def every_model(ctx: DbtHookContext) -> None:
            threads.append(threading.current_thread().name)
            seen.append(ctx)

    result, seen, _ = run_with_hooks(project, ["build"], register)
    assert result.success is False
    assert sorted(ctx.node_id for ctx in seen) == MODELS_RUN
    statuses = {ctx.node_id: ctx.status for ctx in seen}
    dbt_statuses = {r.node.unique_id: str(r.status) for r in result.result.results}
    expected = {"success": "success", "error": "error", "skipped": "skipped"}
    assert statuses == {node_id: expected[dbt_statuses[node_id]] for node_id in MODELS_RUN}
    assert statuses["model.shop.stg_products"] == "error"
    assert statuses["model.shop.orders"] == "skipped"
    failed = next(ctx for ctx in seen if ctx.node_id == "model.shop.stg_products")
    assert failed.event == "post_model"
    assert failed.command == "build" and failed.args == ("build",)
    assert failed.node_ids == ("model.shop.stg_products",)
    assert failed.node.resource_type == "model" and failed.node.name == "stg_products"
    assert "no_such_column" in failed.error
    assert failed.result["message"] == failed.error
    assert failed.result["event_data"]["node_info"]["unique_id"] == "model.shop.stg_products"
    assert failed.run_results is None
    assert next(ctx for ctx in seen if ctx.status == "success").error is None
    # Never on dbt's threads: on the hooks' own thread, in the order the models finished.
    assert set(threads) == {"dbt-prefect-hooks"}


@pytest.mark.parametrize(
    "how",
    [
        "dbt parses in the build",
        # No parse inside the build, so no plugin hook: the hooks resolve the selectors.
        "parsed ahead for --no-write-json",
        "the only_changed parse reused",
    ],
)
def test_select_is_dbts_selector_syntax_resolved_once_against_the_run(
    tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_shop_copy(tmp_path)
    # dbt reads path: selectors against the project root, whatever the working directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    by_path: list[DbtHookContext] = []
    args, extra = ["build"], {}
    if how == "parsed ahead for --no-write-json":
        args = ["build", "--no-write-json"]
    elif how == "the only_changed parse reused":
        extra = {"only_changed": True, "state_store": tmp_path / "state"}

    def register(runner: PrefectDbtRunner, seen: list[DbtHookContext]) -> None:
        runner.post_model(select="tag:marts")(seen.append)
        runner.post_model(select="+orders,resource_type:model")(seen.append)
        runner.on_run_end(select="tag:marts")(seen.append)
        runner.on_run_end(select="tag:no_such_tag")(seen.append)
        runner.on_run_start(seen.append)
        runner.post_model(select="path:models/marts")(by_path.append)
        runner.on_run_end(select="path:models/marts")(by_path.append)

    result, seen, _ = run_with_hooks(project, args, register, **extra)
    assert result.success is True
    by_event: dict[str, list[DbtHookContext]] = {}
    for ctx in seen:
        by_event.setdefault(ctx.event, []).append(ctx)
    assert [ctx.node_ids for ctx in by_event["run_start"]] == [()]
    post = sorted(ctx.node_id for ctx in by_event["post_model"])
    # Once per hook and matching model: tag:marts, then the models `dbt ls` itself selects
    # for +orders (its indirect selection adds tests; the ephemeral model never finishes).
    upstream = [u for u in dbt_ls(project, "+orders,resource_type:model") if u.startswith("model.")]
    assert "model.shop.int_order_payments" in upstream
    assert post == sorted([*MARTS, *(u for u in upstream if u != "model.shop.int_order_payments")])
    (run_end,) = by_event["run_end"]
    assert run_end.status == "success" and run_end.result == {"success": True} and run_end.error is None
    dbt_ids = [r.node.unique_id for r in result.result.results]
    assert list(run_end.run_results) == dbt_ids
    assert run_end.node_ids == tuple(dbt_ids)
    orders = run_end.run_results["model.shop.orders"]
    assert orders["status"] == "success" and orders["execution_time"] > 0
    assert MARTS == [u for u in dbt_ls(project, "path:models/marts") if u.startswith("model.")]
    assert sorted(ctx.node_id for ctx in by_path if ctx.event == "post_model") == MARTS
    assert [ctx.event for ctx in by_path if ctx.event != "post_model"] == ["run_end"]


def test_a_hook_that_raises_logs_one_warning_naming_it_and_changes_nothing_else(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    project = make_shop_copy(tmp_path)

    def register(runner: PrefectDbtRunner, seen: list[DbtHookContext]) -> None:
        @runner.on_run_start
        def broken_start(ctx: DbtHookContext) -> None:
            raise RuntimeError("start hook broke")

        @runner.post_model(select="orders")
        def broken_model_hook(ctx: DbtHookContext) -> None:
            raise ValueError("model hook broke")

        @runner.on_run_end
        async def recorded_end(ctx: DbtHookContext) -> None:  # async hooks are awaited
            seen.append(ctx)

    with caplog.at_level(logging.WARNING):
        result, seen, flow_run_id = run_with_hooks(project, ["build"], register)
    assert result.success is True
    assert [ctx.event for ctx in seen] == ["run_end"]
    warnings = [line.message for line in logs(flow_run_id) if line.level == logging.WARNING]
    assert [w.split(";")[0] for w in warnings if w.startswith("dbt hook ")] == [
        "dbt hook broken_start raised during run_start",
        "dbt hook broken_model_hook raised during post_model",
    ]
    assert any("RuntimeError: start hook broke" in w for w in warnings)
    assert any("ValueError: model hook broke" in w for w in warnings)


def test_on_run_start_takes_no_selector_and_bad_hooks_are_refused() -> None:
    runner = PrefectDbtRunner()
    with pytest.raises(TypeError):
        runner.on_run_start(select="tag:marts")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="dbt selector string"):
        runner.post_model(select="")(print)
    with pytest.raises(TypeError, match="a dbt hook must be a function"):
        runner.on_run_end("not a function")  # type: ignore[call-overload]
