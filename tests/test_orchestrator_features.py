"""PrefectDbtOrchestrator's official features on DuckDB, per wave: freshness gating,
run_results.json that dbt retry accepts, state and defer (slim CI), lifecycle hooks, and
the official page's examples. Real dbt, a real Prefect server; dbt itself is the reference."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from dbt.cli.main import dbtRunner
from prefect import flow
from prefect.context import FlowRunContext

from dbt_prefect import DbtBuildFailed, DbtHookContext, PrefectDbtOrchestrator, PrefectDbtRunner, PrefectDbtSettings
from support.prefect_api import by_name, logs, message_of, state_of, task_runs
from support.projects import REPO_ROOT, make_shop_copy
from support.sources import land_sources

pytestmark = pytest.mark.usefixtures("prefect_server")

OFFICIAL_PAGE = REPO_ROOT.parent / "shared" / "reference" / "prefect-dbt-orchestrator-docs.mdx"


def settings_for(project: Path) -> PrefectDbtSettings:
    return PrefectDbtSettings(project_dir=project, profiles_dir=project)


def in_flow(work: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    @flow(name="dbt-orchestrator-features")
    def features_flow() -> None:
        seen["flow_run_id"] = FlowRunContext.get().flow_run.id
        try:
            seen["result"] = work()
        except Exception as exc:
            seen["error"] = exc

    features_flow()
    return seen


def dbt(project: Path, *args: str) -> Any:
    result = dbtRunner().invoke(
        [*args, "--project-dir", str(project), "--profiles-dir", str(project), "--log-level", "none"]
    )
    assert result.exception is None, result.exception
    return result


def dbt_ls(project: Path, selector: str, *extra: str) -> set[str]:
    listed = dbt(project, "ls", "--select", selector, "--output", "json", "--output-keys", "unique_id", *extra)
    return {json.loads(line)["unique_id"] for line in listed.result}


def add_target(project: Path, name: str, schema: str) -> None:
    profiles = project / "profiles.yml"
    text = profiles.read_text()
    path = re.search(r"path: (.*)", text).group(1)
    profiles.write_text(
        text + f"    {name}:\n      type: duckdb\n      path: {path}\n      schema: {schema}\n      threads: 4\n"
    )


# -- only_fresh_sources --------------------------------------------------------------


def test_only_fresh_sources_skips_what_is_downstream_of_a_stale_source_naming_it(tmp_path: Path) -> None:
    project = make_shop_copy(tmp_path)
    land_sources(project)
    below_payments = dbt_ls(project, "source:payments_app.payments+") - {"source.shop.payments_app.payments"}
    below_visits = dbt_ls(project, "source:crm.visits+") - {"source.shop.crm.visits"}
    orchestrator = PrefectDbtOrchestrator(settings=settings_for(project), raise_on_failure=False)
    # Ephemeral models are folded into their children: no task run, no result of their own.
    ephemeral = dbt_ls(project, "config.materialized:ephemeral")
    plan = orchestrator.plan(only_fresh_sources=True)
    assert set(plan.skipped_nodes) == (below_payments | below_visits) - ephemeral
    seen = in_flow(lambda: orchestrator.run_build(only_fresh_sources=True))
    result = seen["result"]
    skipped = {uid for uid, r in result.items() if r["status"] == "skipped"}
    assert skipped == set(plan.skipped_nodes)
    assert "model.shop.stg_customers" in result and result["model.shop.stg_customers"]["status"] == "success"
    reason = result["model.shop.stg_payments"]["reason"]
    assert reason == "upstream source payments_app.payments is stale (error after 24 hours; last loaded 30.0 hours ago)"
    runs = by_name(task_runs(seen["flow_run_id"]))
    assert state_of(runs["model stg_payments"]) == ("COMPLETED", "Skipped")
    assert message_of(runs["model stg_payments"]) == reason


# -- write_run_results and dbt retry ---------------------------------------------------


def test_dbt_retry_reruns_exactly_the_failed_and_skipped_nodes_of_an_orchestrated_build(tmp_path: Path) -> None:
    project = make_shop_copy(tmp_path)
    model = project / "models" / "staging" / "stg_products.sql"
    good_sql = model.read_text()
    model.write_text("select * from no_such_table\n")
    seen = in_flow(lambda: PrefectDbtOrchestrator(settings=settings_for(project), write_run_results=True).run_build())
    error = seen["error"]
    assert isinstance(error, DbtBuildFailed)
    written = json.loads((project / "target" / "run_results.json").read_text())
    assert written["args"]["which"] == "build"
    assert {r["unique_id"]: r["status"] for r in written["results"]} == {
        uid: r["dbt_status"] for uid, r in error.results.items()
    }
    to_retry = set(error.failed_node_ids) | set(error.skipped_node_ids)
    model.write_text(good_sql)
    retried = dbt(project, "retry")
    rerun = {r.node.unique_id for r in retried.result.results if not r.node.unique_id.startswith("operation.")}
    assert rerun == to_retry
    assert {str(r.status) for r in retried.result.results} <= {"success", "pass"}


# -- state and defer: the slim CI recipe -----------------------------------------------


def test_slim_ci_builds_only_what_changed_and_defers_the_rest_to_production(tmp_path: Path) -> None:
    project = make_shop_copy(tmp_path)
    add_target(project, "ci", "ci")
    dbt(project, "build")  # production, target dev
    prod_artifacts = tmp_path / "prod_artifacts"
    prod_artifacts.mkdir()
    shutil.copy(project / "target" / "manifest.json", prod_artifacts / "manifest.json")
    orders = project / "models" / "marts" / "orders.sql"
    orders.write_text(orders.read_text() + "\n-- a change under review\n")
    expected = dbt_ls(project, "state:modified+", "--state", str(prod_artifacts))
    assert "model.shop.orders" in expected and "model.shop.stg_orders" not in expected

    orchestrator = PrefectDbtOrchestrator(
        settings=settings_for(project), state_path=prod_artifacts, defer=True, write_run_results=True
    )
    seen = in_flow(lambda: orchestrator.run_build(select="state:modified+", target="ci"))
    assert "error" not in seen, seen.get("error")
    result = seen["result"]
    assert set(result) == expected - {"operation.shop.on-run-start.0"}
    assert {r["status"] for r in result.values()} == {"success"}
    # orders was built in the CI schema, reading its unchanged parents from production's.
    compiled = (project / "target" / "compiled" / "shop" / "models" / "marts" / "orders.sql").read_text()
    assert '"main_staging"."stg_orders"' in compiled
    assert "ci_staging" not in compiled


# -- lifecycle hooks -----------------------------------------------------------------


def test_lifecycle_hooks_fire_per_wave_with_the_official_context(tmp_path: Path) -> None:
    project = make_shop_copy(tmp_path)
    orchestrator = PrefectDbtOrchestrator(settings=settings_for(project))
    fired: list[tuple[str, str | None, str | None]] = []

    @orchestrator.on_run_start
    def started(ctx: DbtHookContext) -> None:
        fired.append((ctx.event, ctx.command, None))

    @orchestrator.post_model(select="tag:marts")
    def finance_model(ctx: DbtHookContext) -> None:
        fired.append((ctx.event, ctx.node_id, ctx.status))

    ended_with: dict[str, dict[str, Any]] = {}

    @orchestrator.on_run_end
    def ended(ctx: DbtHookContext) -> None:
        fired.append((ctx.event, ctx.status, None))
        ended_with["orchestrator"] = {u: r["status"] for u, r in ctx.run_results.items()}

    seen = in_flow(lambda: orchestrator.run_build())
    assert "error" not in seen, seen.get("error")
    finance = dbt_ls(project, "tag:marts", "--resource-type", "model")
    assert finance
    assert fired[0] == ("run_start", "build", None)
    assert sorted(f[1] for f in fired if f[0] == "post_model") == sorted(finance)
    assert {f[2] for f in fired if f[0] == "post_model"} == {"success"}
    assert fired[-1] == ("run_end", "success", None)

    # The reference: the runner's on_run_end sees dbt's run results, the project's hooks among them.
    runner = PrefectDbtRunner(settings=settings_for(project))

    @runner.on_run_end
    def runner_ended(ctx: DbtHookContext) -> None:
        ended_with["runner"] = {u: r["status"] for u, r in ctx.run_results.items()}

    in_flow(lambda: runner.invoke(["build"]))
    hooks = {u for u in ended_with["runner"] if u.startswith("operation.")}
    assert len(hooks) == 2  # the project's on-run-start hook and the dbt_prefect package's on-run-end hook
    assert ended_with["orchestrator"] == ended_with["runner"]


# -- the official page's examples --------------------------------------------------------


class WarningsOf(logging.Handler):
    """The warnings one logger emits while the block runs."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.WARNING)
        self.logger = logging.getLogger(name)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    @property
    def text(self) -> str:
        return "\n".join(self.messages)

    def __enter__(self) -> WarningsOf:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)


def official_examples() -> list[str]:
    """The python blocks of the official page, dbt Cloud and the custom executor aside
    (dbt-prefect runs dbt Core only), and the async artifact reader (not a script)."""
    text = OFFICIAL_PAGE.read_text(encoding="utf-8").split("## dbt Cloud execution", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return [b for b in blocks if "DbtCoreExecutor" not in b and "async with" not in b]


def with_our_imports(code: str, project: Path) -> str:
    changed = (
        code.replace("from prefect_dbt.core._orchestrator import", "from dbt_prefect import")
        .replace("from prefect_dbt import", "from dbt_prefect import")
        .replace('Path("./my_dbt_project")', f"Path({str(project)!r})")
        .replace('Path("./analytics")', f"Path({str(project)!r})")
        .replace('Path.home() / ".dbt"', f"Path({str(project)!r})")
    )
    assert "prefect_dbt" not in changed
    return changed


def test_the_official_examples_run_unchanged_with_our_imports(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    examples = official_examples()
    assert len(examples) == 14
    project = make_shop_copy(tmp_path)
    add_target(project, "prod", "main")
    # The examples select tag:daily: tag the staging models.
    dbt_project = project / "dbt_project.yml"
    dbt_project.write_text(dbt_project.read_text().replace("    staging:\n", "    staging:\n      +tags: [daily]\n", 1))
    assert "+tags: [daily]" in dbt_project.read_text()
    monkeypatch.chdir(project)
    # The examples build tag:daily (the staging models) on a warehouse that has the seeds.
    dbt(project, "seed")
    namespace: dict[str, Any] = {"settings": settings_for(project)}
    for code in examples:
        if 'Path("./prod_artifacts")' in code:
            (project / "prod_artifacts").mkdir(exist_ok=True)
            shutil.copy(project / "target" / "manifest.json", project / "prod_artifacts" / "manifest.json")
        if code.lstrip().startswith("results = orchestrator.run_build("):
            # Outside a flow, as the page's snippet runs: a per-wave orchestrator (the
            # previous snippet left a per-node one, which needs a flow here as in prefect-dbt).
            namespace["orchestrator"] = PrefectDbtOrchestrator(settings=settings_for(project))
        exec(compile(with_our_imports(code, project), "official-example", "exec"), namespace)
    out = capsys.readouterr().out
    # The quick start and the CI recipe define flows; run them as a user would. Inside a
    # flow the warning goes to the flow run's log, where the user reads it.
    warnings = WarningsOf("prefect.flow_runs")
    with warnings:
        namespace["run_dbt_build"]()
    printed = capsys.readouterr().out
    assert re.search(r"Results: \{'success': \d+\}", printed), printed
    # The quick start is per node with concurrency=4: on DuckDB the nodes take turns, and say why.
    assert (
        "dbt-prefect runs the nodes of this DuckDB project one at a time in the flow's process: DuckDB allows "
        "one writing process per database file, so concurrency=4 does not apply"
    ) in warnings.text
    assert "BuildPlan: " in out and "  Wave 0 (" in out
    assert namespace["run_ci_incremental"]() == {}


# -- an empty selection ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["per_wave", "per_node"])
def test_an_empty_selection_says_dbts_nothing_to_do_and_runs_no_project_hook(tmp_path: Path, mode: str) -> None:
    project = make_shop_copy(tmp_path)
    plain = dbtRunner().invoke(
        ["build", "--select", "tag:no_such_tag", "--project-dir", str(project), "--profiles-dir", str(project)]
    )
    assert plain.success and plain.result.results == []
    database = tmp_path / "shop.duckdb"
    assert not database.exists()  # plain dbt ran no hook: its on-run-start hook would have made the file

    orchestrator = PrefectDbtOrchestrator(settings=settings_for(project), execution_mode=mode)
    seen = in_flow(lambda: orchestrator.run_build(select="tag:no_such_tag"))
    assert "error" not in seen, seen.get("error")
    assert seen["result"] == {} and seen["result"].hook_results == []
    assert task_runs(seen["flow_run_id"]) == []
    lines = [(line.level, line.message) for line in logs(seen["flow_run_id"]) if line.task_run_id is None]
    assert (logging.WARNING, "Nothing to do. Try checking your model configs and model specification args") in lines
    assert not [m for _, m in lines if m.startswith("Done.")]
    assert not database.exists()
