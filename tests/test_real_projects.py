"""The runner and the orchestrator on public dbt projects nobody here wrote
(../shared/realprojects: dbt-utils' and dbt-project-evaluator's integration test projects,
their packages installed with `local:` links, one of them pointing up the tree).

Plain `dbt build` runs first, in its own process: it is the reference. Then the same build
runs through the runner, the orchestrator per wave and per node, each in a flow on the
real Prefect server and from another working directory. Every node dbt ran, its status,
and dbt's `Done.` counts must come out the same; every task run must be terminal; `plan()`
must come back in bounded time; and the DuckDB file must be free when the call returns.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType
from prefect.context import FlowRunContext

from dbt_prefect import CacheConfig, PrefectDbtOrchestrator, PrefectDbtRunner, PrefectDbtSettings
from support.prefect_api import logs, task_runs
from support.projects import REPO_ROOT

SHARED = REPO_ROOT.parent / "shared" / "realprojects"

pytestmark = [
    pytest.mark.usefixtures("prefect_server"),
    pytest.mark.skipif(
        not (SHARED / "use.sh").is_file(),
        reason=f"the shared real projects are not here ({SHARED} is absent); they come with the workplace's shared folder",
    ),
]

# The same offline DuckDB profile the corpus gives dbt_project_evaluator; the shared copy of
# dbt_utils/integration_tests comes without one (its .gitignore left it out).
DUCKDB_PROFILE = """integration_tests:
  target: duckdb
  outputs:
    duckdb:
      type: duckdb
      path: "{{ env_var('DBT_DUCKDB_PATH', 'duck.db') }}"
      schema: main
      threads: 1
"""
DONE = re.compile(r"Done\. (PASS=\d+ WARN=\d+ ERROR=\d+ SKIP=\d+ NO-OP=\d+ TOTAL=\d+)")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class RealProject:
    name: str
    directory: Path
    database: Path
    # What plain `dbt build` reported, from its run_results.json: unique_id -> status.
    statuses: dict[str, str]
    # The counts of its closing line: "PASS=227 WARN=0 ERROR=4 SKIP=6 NO-OP=0 TOTAL=237".
    done: str

    @property
    def nodes(self) -> dict[str, str]:
        return {u: s for u, s in self.statuses.items() if not u.startswith("operation.")}

    @property
    def hooks(self) -> dict[str, str]:
        return {u: s for u, s in self.statuses.items() if u.startswith("operation.")}

    def settings(self) -> PrefectDbtSettings:
        return PrefectDbtSettings(project_dir=self.directory, profiles_dir=self.directory)


@pytest.fixture(scope="module", params=["dbt_utils", "dbt_project_evaluator"])
def real_project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealProject]:
    name = request.param
    destination = tmp_path_factory.mktemp(name)
    placed = subprocess.run(
        ["bash", str(SHARED / "use.sh"), name, str(destination), sys.executable],
        check=True,
        capture_output=True,
        text=True,
    )
    directory = Path(placed.stdout.splitlines()[-1])
    if not (directory / "profiles.yml").exists():
        (directory / "profiles.yml").write_text(DUCKDB_PROFILE)
    database = destination / f"{name}.duckdb"
    previous = os.environ.get("DBT_DUCKDB_PATH")
    os.environ["DBT_DUCKDB_PATH"] = str(database)
    try:
        plain = subprocess.run(
            [str(Path(sys.executable).parent / "dbt"), "build", "--profiles-dir", ".", "--no-use-colors"],
            cwd=directory,
            capture_output=True,
            text=True,
        )
        assert plain.returncode in (0, 1), plain.stdout[-3000:] + plain.stderr[-3000:]
        run_results = json.loads((directory / "target" / "run_results.json").read_text())
        statuses = {entry["unique_id"]: entry["status"] for entry in run_results["results"]}
        (done,) = DONE.findall(plain.stdout)
        yield RealProject(name, directory, database, statuses, done)
    finally:
        if previous is None:
            os.environ.pop("DBT_DUCKDB_PATH", None)
        else:
            os.environ["DBT_DUCKDB_PATH"] = previous


def in_flow(work: Any) -> tuple[Any, Any]:
    """work() in a fresh flow run; (its result, the flow run id)."""
    seen: dict[str, Any] = {}

    @flow(name="dbt-real-project")
    def real_project_flow() -> None:
        seen["flow_run_id"] = FlowRunContext.get().flow_run.id
        seen["result"] = work()

    real_project_flow()
    return seen["result"], seen["flow_run_id"]


def database_is_free(path: Path) -> str:
    """'' when another process can open the DuckDB file for writing, else DuckDB's error."""
    probe = subprocess.run(
        [sys.executable, "-c", f"import duckdb; duckdb.connect({str(path)!r}).close()"],
        capture_output=True,
        text=True,
    )
    return "" if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["?"])[-1]


def flow_done_lines(flow_run_id: Any) -> list[str]:
    return [m for line in logs(flow_run_id) if line.task_run_id is None for m in DONE.findall(line.message)]


def report_stats(flow_run_id: Any) -> list[str]:
    """The counts line of each run report (markdown artifact) of the flow run."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), type=ArtifactFilterType(any_=["markdown"])
            )
        )
    return [m for a in artifacts for m in re.findall(r"\*\*(PASS=\d+ [^*]*TOTAL=\d+)\*\*", a.data or "")]


def assert_task_runs_are_dbts_nodes(flow_run_id: Any, expected_count: int) -> None:
    runs = task_runs(flow_run_id)
    assert len(runs) == expected_count
    assert {r.state_type.value for r in runs} <= TERMINAL, [r.name for r in runs if r.state_type.value not in TERMINAL]


def test_the_runner_reports_every_node_as_dbt_does(
    real_project: RealProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # not the project directory
    runner = PrefectDbtRunner(settings=real_project.settings(), raise_on_failure=False)
    result, flow_run_id = in_flow(lambda: runner.invoke(["build"]))
    statuses = {r.node.unique_id: str(getattr(r.status, "value", r.status)) for r in result.result.results}
    assert statuses == real_project.statuses
    assert database_is_free(real_project.database) == ""
    assert_task_runs_are_dbts_nodes(flow_run_id, len(real_project.nodes))
    assert flow_done_lines(flow_run_id) == [real_project.done]


@pytest.mark.parametrize("mode", ["per_wave", "per_node"])
def test_the_orchestrator_reports_every_node_as_dbt_does(
    real_project: RealProject, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    orchestrator = PrefectDbtOrchestrator(settings=real_project.settings(), execution_mode=mode, raise_on_failure=False)
    results, flow_run_id = in_flow(orchestrator.run_build)
    # The DuckDB file is free the moment run_build returns, failures or not.
    assert database_is_free(real_project.database) == ""
    assert {u: r["dbt_status"] for u, r in results.items()} == real_project.nodes
    assert {r.unique_id: r.status for r in results.hook_results} == real_project.hooks
    for unique_id, result in results.items():
        if result["status"] == "skipped":  # dbt skipped it below a failure: which one is named
            assert result["failed_upstream"], unique_id
            assert set(result["failed_upstream"]) <= {u for u, s in real_project.statuses.items() if s in ("error", "fail")}
    assert_task_runs_are_dbts_nodes(flow_run_id, len(real_project.nodes))
    # The build's closing line, and the run report's counts: dbt's.
    assert flow_done_lines(flow_run_id)[-1] == real_project.done
    assert report_stats(flow_run_id) == [real_project.done]


def test_plan_comes_back_in_bounded_time_with_every_node(real_project: RealProject) -> None:
    orchestrator = PrefectDbtOrchestrator(settings=real_project.settings())
    started = time.monotonic()
    plan = orchestrator.plan()
    assert time.monotonic() - started < 10
    assert plan.node_count == len(real_project.nodes)
    assert {n.unique_id for wave in plan.waves for n in wave.nodes} == set(real_project.nodes)
    assert database_is_free(real_project.database) == ""


def test_caching_without_the_dbt_package_names_the_sources_it_cannot_see(
    real_project: RealProject, tmp_path: Path
) -> None:
    """prefect-dbt's users switch without adding our dbt package. Sources with no data
    version (here: declared, never loaded) are named in one warning, and count by code
    only, so an unchanged second build is answered by the cache."""
    if real_project.name != "dbt_project_evaluator":
        pytest.skip("dbt_project_evaluator is the shared project with sources")
    manifest = json.loads((real_project.directory / "target" / "manifest.json").read_text())
    assert not any(m.startswith("macro.dbt_prefect.") for m in manifest["macros"])
    sources = manifest["sources"]
    with duckdb.connect(str(real_project.database), read_only=True) as con:
        tables = set(con.execute("select table_schema, table_name from information_schema.tables").fetchall())
    missing = {u for u, s in sources.items() if (s["schema"], s["identifier"]) not in tables}

    def cached_build() -> Any:
        orchestrator = PrefectDbtOrchestrator(
            settings=real_project.settings(),
            execution_mode="per_node",
            cache=CacheConfig(key_storage=tmp_path / "cache"),
            raise_on_failure=False,
        )
        results, flow_run_id = in_flow(orchestrator.run_build)
        return results, flow_run_id

    first, flow_run_id = cached_build()
    unseen = [line.message for line in logs(flow_run_id) if "cache cannot see new data" in line.message]
    assert len(unseen) == 1
    match = re.search(r"in (\d+) source\(s\): (.*?) \(", unseen[0])
    assert match is not None
    named = set(match.group(2).split(", "))
    assert int(match.group(1)) == len(named)
    name_of = {u: f"{s['source_name']}.{s['name']}" for u, s in sources.items()}
    read_by_a_model = {
        parent
        for u, node in manifest["nodes"].items()
        if u in first and node["resource_type"] == "model"
        for parent in node["depends_on"]["nodes"]
        if parent in missing
    }
    assert read_by_a_model and {name_of[u] for u in read_by_a_model} <= named <= {name_of[u] for u in missing}

    again, _ = cached_build()
    assert {u for u, r in again.items() if r["status"] == "success" and u.split(".")[0] in ("model", "seed")} == set()
    assert {u for u, r in again.items() if r["status"] == "cached"} == {
        u for u in first if u.split(".")[0] in ("model", "seed") and first[u]["status"] == "success"
    }


SAVED_QUERY = """version: 2
saved_queries:
  - name: new_metric_by_day
    query_params:
      metrics: [new_metric]
      group_by: ["TimeDimension('dim__date_day', 'day')"]
"""


@pytest.mark.parametrize("how", ["plain dbt", "runner", "per_wave", "per_node"])
def test_exposures_and_saved_queries_are_skipped_below_a_failure_as_dbt_skips_them(
    how: str, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A saved query reads models through its metric and semantic model; dbt build reports
    it no-op, or skipped when a model under it failed. Plain dbt is the reference."""
    destination = tmp_path_factory.mktemp("semantic")
    placed = subprocess.run(
        ["bash", str(SHARED / "use.sh"), "dbt_project_evaluator", str(destination), sys.executable],
        check=True,
        capture_output=True,
        text=True,
    )
    project = Path(placed.stdout.splitlines()[-1])
    (project / "models" / "marts" / "saved_queries.yml").write_text(SAVED_QUERY)
    model = project / "models" / "marts" / "intermediate" / "dim_model_7.sql"
    model.write_text(model.read_text() + "\nwhere no_such_column = 1\n")
    monkeypatch.setenv("DBT_DUCKDB_PATH", str(destination / "semantic.duckdb"))
    selector = "+saved_query:new_metric_by_day +exposure:exposure_1"
    expected = {
        "model.dbt_project_evaluator_integration_tests.dim_model_7": "error",
        "saved_query.dbt_project_evaluator_integration_tests.new_metric_by_day": "skipped",
        "exposure.dbt_project_evaluator_integration_tests.exposure_1": "skipped",
    }
    settings = PrefectDbtSettings(project_dir=project, profiles_dir=project)
    if how == "plain dbt":
        plain = subprocess.run(
            [str(Path(sys.executable).parent / "dbt"), "build", "--select", selector, "--profiles-dir", "."],
            cwd=project,
            capture_output=True,
            text=True,
        )
        assert plain.returncode == 1, plain.stdout[-2000:]
        entries = json.loads((project / "target" / "run_results.json").read_text())["results"]
        statuses = {e["unique_id"]: e["status"] for e in entries}
    elif how == "runner":
        runner = PrefectDbtRunner(settings=settings, raise_on_failure=False)
        result, _ = in_flow(lambda: runner.invoke(["build", "--select", selector]))
        statuses = {r.node.unique_id: str(getattr(r.status, "value", r.status)) for r in result.result.results}
    else:
        orchestrator = PrefectDbtOrchestrator(settings=settings, execution_mode=how, raise_on_failure=False)
        results, flow_run_id = in_flow(lambda: orchestrator.run_build(select=selector))
        statuses = {u: r["dbt_status"] for u, r in results.items()}
        assert results["saved_query.dbt_project_evaluator_integration_tests.new_metric_by_day"]["failed_upstream"] == [
            "model.dbt_project_evaluator_integration_tests.dim_model_7"
        ]
        states = {r.name: r.state_name for r in task_runs(flow_run_id)}
        assert states["saved_query new_metric_by_day"] == "Skipped"
        assert states["exposure exposure_1"] == "Skipped"
    assert {u: statuses[u] for u in expected} == expected
    assert sum(1 for u in statuses if u.startswith(("saved_query.", "exposure."))) == 2
