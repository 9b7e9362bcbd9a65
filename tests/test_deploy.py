"""From a dbt project to Prefect deployments: `dbt-prefect init`, `prefect deploy`, a worker,
and `dbt-prefect serve`, every piece real, read back through the client."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from dbt_prefect.cli.main import app
from dbt_prefect.cli.serve import flow_parameters
from support.deployments import (
    DBT_PREFECT,
    FINAL_STATE_TYPES,
    copy_realproject,
    deployment,
    git,
    prefect,
    prefect_in_a_terminal,
    quiet_env,
    realprojects,
    run,
    run_worker_once,
    trigger,
    wait_until_final,
)
from support.prefect_api import asset_events, logs, materializations, poll, related_assets, state_of, task_runs
from support.projects import REPO_ROOT, make_shop_copy

FLOW_PARAMETERS = ["select", "exclude", "full_refresh", "target", "vars", "only_changed", "mode", "dbt_args"]
needs_realprojects = pytest.mark.skipif(
    realprojects() is None,
    reason="needs the shared real projects (../shared/realprojects), which are absent here",
)


def tiny_project(folder: Path, name: str = "tiny") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dbt_project.yml").write_text(f"name: {name}\nversion: '1.0.0'\nconfig-version: 2\nprofile: {name}\n")
    (folder / "profiles.yml").write_text(
        f"{name}:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: tiny.duckdb\n"
    )
    return folder


def init(*args: str, cwd: Path | None = None) -> Any:
    previous = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(app, ["init", *args])
    finally:
        os.chdir(previous)


# -- dbt-prefect init: what it writes --------------------------------------------------
def test_init_writes_a_flow_module_and_a_prefect_yaml_with_three_ways_to_deploy(tmp_path: Path) -> None:
    project = tiny_project(tmp_path / "tiny")
    result = init("--state-store", "local-file-system/dbt-state", cwd=project)
    assert result.exit_code == 0, result.output
    assert result.output == (
        "Wrote the Prefect deployments of the dbt project tiny:\n"
        f'  {project}/prefect.yaml: the deployments nightly (cron "0 6 * * *", UTC), build-select, build-changed\n'
        f'  {project}/flows/build_tiny.py: the flow "tiny"\n'
        "\n"
        "Next:\n"
        "  prefect work-pool create dbt --type process\n"
        "  prefect deploy --all\n"
        "Then `prefect worker start --pool dbt` runs the deployments' flow runs.\n"
    )
    spec = yaml.safe_load((project / "prefect.yaml").read_text())
    assert spec["name"] == "tiny"
    assert spec["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(project)}}]
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert list(deployments) == ["nightly", "build-select", "build-changed"]
    for entry in deployments.values():
        assert entry["entrypoint"] == "flows/build_tiny.py:dbt_build"
        assert entry["work_pool"]["name"] == "dbt"
    assert deployments["nightly"]["schedules"] == [{"cron": "0 6 * * *", "timezone": "UTC"}]
    assert deployments["build-select"]["schedules"] == deployments["build-changed"]["schedules"] == []
    assert deployments["build-changed"]["parameters"] == {"only_changed": True}
    assert deployments["build-changed"]["work_pool"]["job_variables"] == {
        "env": {"DBT_PREFECT_STATE_STORE": "local-file-system/dbt-state"}
    }
    module = (project / "flows" / "build_tiny.py").read_text()
    assert 'FLOW_NAME = "tiny"\n' in module
    assert 'PROJECT_DIR = (Path(__file__).resolve().parent / "..").resolve()\n' in module
    compile(module, "build_tiny.py", "exec")


def test_the_written_flow_has_the_typed_parameters_of_the_run_form(tmp_path: Path) -> None:
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    project = tiny_project(tmp_path / "tiny")
    assert init("--out", str(tmp_path / "deploy"), cwd=project).exit_code == 0
    module = tmp_path / "deploy" / "flows" / "build_tiny.py"
    assert 'PROJECT_DIR = (Path(__file__).resolve().parent / "../../tiny").resolve()\n' in module.read_text()
    written = load_flow_from_entrypoint(f"{module}:dbt_build")
    assert written.name == "tiny"
    schema = parameter_schema(written).model_dump()
    assert list(schema["properties"]) == FLOW_PARAMETERS
    assert schema["properties"]["mode"]["enum"] == ["runner", "per_wave", "per_node"]
    assert schema["properties"]["full_refresh"]["type"] == "boolean"
    assert schema["properties"]["select"]["description"].startswith("dbt's --select")


def test_the_written_flow_runs_per_node_on_the_dask_cluster_its_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.flows import load_flow_from_entrypoint
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    project = tiny_project(tmp_path / "tiny")
    assert init(cwd=project).exit_code == 0
    entrypoint = f"{project}/flows/build_tiny.py:dbt_build"
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert isinstance(load_flow_from_entrypoint(entrypoint).task_runner, ThreadPoolTaskRunner)
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://dask-scheduler:8786")
    on_dask = load_flow_from_entrypoint(entrypoint).task_runner
    assert isinstance(on_dask, DaskTaskRunner)
    assert on_dask.address == "tcp://dask-scheduler:8786"


def test_without_a_state_store_there_is_no_slim_ci_deployment(tmp_path: Path) -> None:
    project = tiny_project(tmp_path / "tiny")
    assert init(cwd=project).exit_code == 0
    spec = yaml.safe_load((project / "prefect.yaml").read_text())
    assert [d["name"] for d in spec["deployments"]] == ["nightly", "build-select"]


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    project = tiny_project(tmp_path / "tiny")
    assert init(cwd=project).exit_code == 0
    (project / "prefect.yaml").write_text("# mine\n")
    again = init(cwd=project)
    assert again.exit_code == 2
    assert again.output == (
        f"Error: {project}/prefect.yaml and {project}/flows/build_tiny.py already exist; dbt-prefect init "
        "leaves them as they are. Pass --force to overwrite them, or --out to write somewhere else.\n"
    )
    assert (project / "prefect.yaml").read_text() == "# mine\n"
    forced = init("--force", cwd=project)
    assert forced.exit_code == 0, forced.output
    assert (project / "prefect.yaml").read_text().startswith("# Prefect deployments of the dbt project tiny")


def test_init_without_a_dbt_project_says_where_it_looked(tmp_path: Path) -> None:
    result = init("--project-dir", str(tmp_path))
    assert result.exit_code == 2
    assert result.output == (
        f"Error: {tmp_path} has no dbt_project.yml, so there is no dbt project to deploy. Run `dbt-prefect init` "
        "in your dbt project's folder, or pass --project-dir PATH.\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_init_with_an_invalid_cron_writes_nothing(tmp_path: Path) -> None:
    project = tiny_project(tmp_path / "tiny")
    result = init("--cron", "61 * * * *", cwd=project)
    assert result.exit_code == 2
    assert result.output == (
        "Error: --cron '61 * * * *' is not a cron expression Prefect accepts (Invalid cron string: \"61 * * * *\"). "
        'Give five fields, minute hour day-of-month month day-of-week: "0 6 * * *" is 06:00 every day, '
        '"*/15 * * * *" every 15 minutes (or @hourly, @daily, @weekly).\n'
    )
    zone = init("--timezone", "Mars/Olympus", cwd=project)
    assert zone.exit_code == 2
    assert zone.output.startswith("Error: --timezone 'Mars/Olympus': Invalid timezone")
    assert sorted(p.name for p in project.iterdir()) == ["dbt_project.yml", "profiles.yml"]


def test_init_into_a_folder_that_cannot_be_written_says_so(tmp_path: Path) -> None:
    # Root writes anywhere: then the command runs as `nobody`, in folders it may read.
    shared = Path(tempfile.mkdtemp(dir=os.environ["DBT_PREFECT_TESTS_SHARED_TMP"]))
    try:
        os.chmod(shared, 0o755)
        project = tiny_project(shared / "tiny")
        locked = shared / "locked"
        locked.mkdir(mode=0o555)
        os.chmod(locked, 0o555)
        home = shared / "home"
        home.mkdir(mode=0o777)
        os.chmod(home, 0o777)
        as_nobody = os.geteuid() == 0

        def drop_privileges() -> None:
            if as_nobody:
                os.setgid(65534)
                os.setuid(65534)

        done = subprocess.run(
            [str(DBT_PREFECT), "init", "--project-dir", str(project), "--out", str(locked / "deploy")],
            cwd=shared,
            env=quiet_env(HOME=str(home), PREFECT_HOME=str(home / "prefect")),
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=drop_privileges,
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr == (
            f"Error: cannot write the deployment files to {locked / 'deploy'}: Permission denied. Pass --out "
            "with a folder you can write to, or make this one writable.\n"
        )
        assert list(locked.iterdir()) == []
    finally:
        for folder in (shared, *shared.rglob("*")):
            if folder.is_dir():
                os.chmod(folder, 0o755)
        shutil.rmtree(shared, ignore_errors=True)


def test_init_in_a_git_repository_with_a_remote_clones_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    project = tiny_project(repo / "analytics" / "tiny")
    git("init", "-q", "-b", "trunk", cwd=repo)
    git("remote", "add", "origin", "https://git.example.invalid/data/repo.git", cwd=repo)
    assert init(cwd=project).exit_code == 0
    spec = yaml.safe_load((project / "prefect.yaml").read_text())
    assert spec["pull"] == [
        {
            "prefect.deployments.steps.git_clone": {
                "id": "clone",
                "repository": "https://git.example.invalid/data/repo.git",
                "branch": "trunk",
            }
        },
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ clone.directory }}/analytics/tiny"}},
    ]
    local = init("--force", "--code", "local", cwd=project)
    assert local.exit_code == 0
    spec = yaml.safe_load((project / "prefect.yaml").read_text())
    assert spec["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(project)}}]


# -- dbt-prefect serve: its inputs -----------------------------------------------------
def test_serve_turns_dbt_flags_into_the_flows_parameters() -> None:
    assert flow_parameters(["--select", "orders+", "customers", "--exclude", "tag:slow", "--full-refresh"]) == {
        "select": "orders+ customers",
        "exclude": "tag:slow",
        "full_refresh": True,
    }
    assert flow_parameters(["-s", "a", "--target=prod", "--vars", "{region: eu, n: 3}", "--threads", "4"]) == {
        "select": "a",
        "target": "prod",
        "vars": {"region": "eu", "n": 3},
        "dbt_args": ["--threads", "4"],
    }
    assert flow_parameters([]) == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], 'Error: give one schedule: --cron "0 6 * * *" or --interval SECONDS\n'),
        (
            ["--cron", "0 6 * * *", "--interval", "60"],
            'Error: give one schedule: --cron "0 6 * * *" or --interval SECONDS\n',
        ),
        (
            ["--cron", "every day"],
            "Error: --cron 'every day' is not a cron expression Prefect accepts (Invalid cron string: \"every day\"). "
            'Give five fields, minute hour day-of-month month day-of-week: "0 6 * * *" is 06:00 every day, '
            '"*/15 * * * *" every 15 minutes (or @hourly, @daily, @weekly).\n',
        ),
        (["--interval", "0"], "Error: --interval 0: give a number of seconds of at least 1\n"),
        (["--interval", "60", "--vars", "[1, 2]"], "Error: --vars '[1, 2]' is not a mapping, e.g. '{key: value}'\n"),
        (
            ["--interval", "60", "--only-changed"],
            "Error: --only-changed needs a place for the last build's state: --state-store PATH (a folder, or a "
            "block slug such as local-file-system/dbt-state) or DBT_PREFECT_STATE_STORE\n",
        ),
        (
            ["--interval", "60", "--only-changed", "--state-store", "state", "--mode", "per_node"],
            "Error: --only-changed works with --mode runner, not --mode per_node\n",
        ),
        (["--interval", "60", "--mode", "per_model"], "Error: --mode 'per_model': give runner, per_wave or per_node\n"),
    ],
)
def test_serve_rejects_bad_input_before_serving(tmp_path: Path, args: list[str], message: str) -> None:
    project = tiny_project(tmp_path / "tiny")
    result = CliRunner().invoke(app, ["serve", "--project-dir", str(project), *args])
    assert result.exit_code == 2
    assert result.output == message


def test_serve_without_a_prefect_server_names_what_to_set(tmp_path: Path) -> None:
    project = tiny_project(tmp_path / "tiny")
    env = quiet_env(PREFECT_HOME=str(tmp_path / "home"))
    env.pop("PREFECT_API_URL")
    done = run([DBT_PREFECT, "serve", "--project-dir", project, "--interval", "60"], cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr == (
        "Error: dbt-prefect serve needs a Prefect server that stays up: the deployment, its schedule and its runs "
        "live there, and the temporary server a command starts without PREFECT_API_URL schedules nothing and is "
        "gone when the command ends. Start one with `prefect server start`, then export "
        "PREFECT_API_URL=http://127.0.0.1:4200/api (or use Prefect Cloud: `prefect cloud login`).\n"
    )


# -- end to end: a real project, deployed from git, run by a process worker -------------
EVALUATOR_FLOW = "dbt_project_evaluator_integration_tests"
# dbt's own run_results.json for `dbt build` of the project (../shared/realprojects/README.md).
EVALUATOR_BUILD = {"seed": 28, "model": 54, "test": 72, "exposure": 1}


def task_runs_by_type(flow_run_id: Any) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for task_run in task_runs(flow_run_id):
        found.setdefault(task_run.name.split(" ")[0], []).append(task_run)
    return found


@needs_realprojects
@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_deployments_from_git_and_from_a_local_folder_run_on_one_process_worker(tmp_path: Path) -> None:
    """A team with two dbt projects on one work pool: a shared real project kept in git,
    deployed from its remote, and the demo shop deployed from its folder."""
    from prefect.variables import Variable

    # The real project as a team keeps it: in a git repository with a remote, packages
    # not committed, and a profile that takes the warehouse from Prefect.
    repo = tmp_path / "repo"
    project = copy_realproject("dbt_project_evaluator", repo)
    variable = f"evaluator_duckdb_{uuid.uuid4().hex[:8]}"
    warehouse = tmp_path / "warehouse" / "duck.db"
    warehouse.parent.mkdir()
    Variable.set(variable, str(warehouse))
    profiles = project / "profiles.yml"
    profiles.write_text(
        profiles.read_text()
        .replace(
            "path: \"{{ env_var('DBT_DUCKDB_PATH', 'duck.db') }}\"", f'path: "{{{{ prefect.variables.{variable} }}}}"'
        )
        .replace("threads: 1", "threads: 4")
    )
    assert variable in profiles.read_text() and "threads: 4" in profiles.read_text()
    (repo / ".gitignore").write_text("dbt_packages/\ntarget/\nlogs/\n*.db\n*.db.wal\n")
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "the dbt project", cwd=repo)
    remote = tmp_path / "remote.git"
    git("clone", "-q", "--bare", repo, remote, cwd=tmp_path)
    git("remote", "add", "origin", remote, cwd=repo)

    pool = f"dbt-{uuid.uuid4().hex[:8]}"
    scaffolded = run([DBT_PREFECT, "init", "--pool", pool], cwd=project)
    assert scaffolded.returncode == 0, scaffolded.stderr
    assert (
        f"Workers clone {remote} (branch main) at every run: commit and push these two files first."
        in scaffolded.stdout
    )
    assert scaffolded.stdout.endswith(
        f"Next:\n  prefect work-pool create {pool} --type process\n  prefect deploy --all\n"
        f"Then `prefect worker start --pool {pool}` runs the deployments' flow runs.\n"
    )
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "Prefect deployments", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)

    # The two commands init printed, then a worker that runs what is due and exits.
    prefect("work-pool", "create", pool, "--type", "process", cwd=project)
    prefect_in_a_terminal("deploy", "--all", cwd=project)  # in a terminal too, it asks nothing
    nightly = deployment(f"{EVALUATOR_FLOW}/nightly")
    assert [(s.schedule.cron, s.schedule.timezone) for s in nightly.schedules] == [("0 6 * * *", "UTC")]
    assert list(nightly.parameter_openapi_schema["properties"]) == FLOW_PARAMETERS
    assert nightly.pull_steps[0]["prefect.deployments.steps.git_clone"]["repository"] == str(remote)
    worker_folder = tmp_path / "worker"
    worker_folder.mkdir()

    # The nightly build, with no parameters: dbt's whole build, node for node.
    nightly_run = trigger(f"{EVALUATOR_FLOW}/nightly")
    run_worker_once(pool, cwd=worker_folder)
    finished = wait_until_final(nightly_run, timeout=60)
    assert state_of(finished) == ("COMPLETED", "Completed"), finished.state.message
    by_type = task_runs_by_type(nightly_run)
    assert {kind: len(runs) for kind, runs in by_type.items()} == EVALUATOR_BUILD
    assert {state_of(run) for kind in ("seed", "model", "test") for run in by_type[kind]} == {
        ("COMPLETED", "Completed")
    }
    assert [(run.name, *state_of(run)) for run in by_type["exposure"]] == [
        ("exposure exposure_1", "COMPLETED", "No-op")
    ]
    built = materializations(asset_events(nightly_run))
    assert len(built) == EVALUATOR_BUILD["seed"] + EVALUATOR_BUILD["model"]
    assert all(key.startswith("duckdb://duck/") for key in built)
    assert warehouse.is_file()  # the profile's path came from the Prefect variable

    # The demo shop, deployed from its folder on this machine to the same pool.
    shop = make_shop_copy(tmp_path / "local")
    state = tmp_path / "shop-state"
    scaffolded = run([DBT_PREFECT, "init", "--pool", pool, "--project-dir", shop, "--state-store", state], cwd=tmp_path)
    assert scaffolded.returncode == 0, scaffolded.stderr
    assert f"  cd {shop} && prefect deploy --all\n" in scaffolded.stdout
    prefect_in_a_terminal("deploy", "--all", cwd=shop)
    assert deployment("shop/build-select").pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(shop)}}
    ]
    assert deployment("shop/build-changed").job_variables == {"env": {"DBT_PREFECT_STATE_STORE": str(state)}}

    # On demand, with parameters: in the real project one model and everything below it;
    # in the shop, a model with what it needs, per wave. One worker runs both at once.
    selected_run = trigger(f"{EVALUATOR_FLOW}/build-select", {"select": "fct_model_6+"})
    per_wave_run = trigger("shop/build-select", {"select": "+stg_products", "mode": "per_wave"})
    run_worker_once(pool, cwd=worker_folder)
    finished = wait_until_final(selected_run, timeout=60)
    assert state_of(finished) == ("COMPLETED", "Completed"), finished.state.message
    assert finished.parameters == {"select": "fct_model_6+"}
    assert {run.name: state_of(run)[1] for run in task_runs(selected_run)} == {
        "model fct_model_6": "Completed",
        "model report_1": "Completed",
        "model report_2": "Completed",
        "exposure exposure_1": "No-op",
    }
    built = materializations(asset_events(selected_run))
    assert sorted(built) == [
        "duckdb://duck/main/fct_model_6",
        "duckdb://duck/main/report_1",
        "duckdb://duck/main/report_2",
    ]
    assert related_assets(built["duckdb://duck/main/report_1"]) == {"duckdb://duck/main/fct_model_6"}
    assert related_assets(built["duckdb://duck/main/report_2"]) == {"duckdb://duck/main/fct_model_6"}

    finished = wait_until_final(per_wave_run, timeout=60)
    assert state_of(finished) == ("COMPLETED", "Completed"), finished.state.message
    assert {run.name: state_of(run)[1] for run in task_runs(per_wave_run)} == {
        "seed raw_products": "Completed",
        "model stg_products": "Completed",
        "test unique_stg_products_product_id": "Completed",
    }
    # Per wave: one dbt build for the seed, then one for the model and its test; then the
    # whole build's line, as one `dbt build` prints it (the two project hooks included).
    assert [log.message for log in logs(per_wave_run) if log.message.startswith("Done.")] == [
        "Done. PASS=2 WARN=0 ERROR=0 SKIP=0 NO-OP=0 TOTAL=2",
        "Done. PASS=3 WARN=0 ERROR=0 SKIP=0 NO-OP=0 TOTAL=3",
        "Done. PASS=5 WARN=0 ERROR=0 SKIP=0 NO-OP=0 TOTAL=5",
    ]


# -- dbt-prefect serve: a schedule served from one process -----------------------------
def _runs_of(deployment_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def _server_cannot_schedule() -> bool:
    from importlib.metadata import version

    prefect_version = tuple(int(part) for part in version("prefect").split(".")[:2])
    sqlalchemy_version = tuple(int(part) for part in version("sqlalchemy").split(".")[:2])
    return prefect_version < (3, 9) and sqlalchemy_version >= (2, 1)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
@pytest.mark.skipif(
    _server_cannot_schedule(),
    reason="Prefect 3.8's server schedules no run with SQLAlchemy 2.1 (its scheduler fails with "
    '"Can\'t evaluate bulk DML statement"), whoever created the deployment',
)
def test_serve_runs_the_build_on_its_interval_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    project = make_shop_copy(tmp_path)
    name = f"serve-{uuid.uuid4().hex[:8]}"
    out, err = tmp_path / "serve.out", tmp_path / "serve.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        # Its own process group, as a terminal's foreground job: Ctrl-C reaches the group.
        process = subprocess.Popen(
            [
                str(DBT_PREFECT),
                "serve",
                "--select",
                "raw_orders",
                "--interval",
                "10",
                "--name",
                name,
                "--project-dir",
                str(project),
            ],
            cwd=tmp_path,
            env=quiet_env(PREFECT_RUNNER_POLL_FREQUENCY="2"),
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        served = poll(lambda: _deployment_or_none(f"shop/{name}"), lambda found: found is not None, timeout=120)
        assert served is not None, err.read_text()[-3000:]
        assert served.parameters == {"select": "raw_orders"}
        finished = poll(
            lambda: [run for run in _runs_of(served.id) if run.state_type.value in FINAL_STATE_TYPES],
            bool,
            timeout=240,
        )
        assert finished, f"no scheduled run finished; serve's stderr:\n{err.read_text()[-3000:]}"
        first = finished[0]
        assert state_of(first) == ("COMPLETED", "Completed"), first.state.message
        assert first.auto_scheduled
        assert [run.name for run in task_runs(first.id)] == ["seed raw_orders"]
    finally:
        os.killpg(process.pid, signal.SIGINT)
    try:
        # Prefect's runner pauses the deployment on the server before it stops: on a busy
        # CI machine that request alone has taken tens of seconds.
        code = process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        group = subprocess.run(["ps", "-o", "pid,stat,etime,cmd", "-g", str(process.pid)], capture_output=True, text=True)
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(
            f"serve did not stop within 120 s of Ctrl-C; its group:\n{group.stdout}\n"
            f"stdout:\n{out.read_text()[-2000:]}\nstderr:\n{err.read_text()[-4000:]}"
        )
    assert code == 0, err.read_text()[-3000:]
    assert out.read_text().splitlines()[0] == (
        f"Serving dbt build of the project shop as the deployment 'shop/{name}', every 10 s. Stop with Ctrl-C."
    )
    assert out.read_text().endswith(f"Stopped serving 'shop/{name}'.\n")
    assert deployment(f"shop/{name}").paused  # no runs pile up while nothing serves them
    alive = poll(lambda: _group_alive(process.pid), lambda alive: not alive, timeout=30)
    assert not alive, "a process of serve's group outlived it"


def _deployment_or_none(full_name: str) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        return deployment(full_name)
    except ObjectNotFound:
        return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# -- a dbt command without PREFECT_API_URL: its own temporary server -------------------
def _no_api_env(home: Path, **extra: str) -> dict[str, str]:
    env = quiet_env(PREFECT_HOME=str(home), **extra)
    for name in ("PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED"):
        env.pop(name, None)  # the server's telemetry must be off without the user's help
    return env


def _temporary_servers(home: Path) -> list[Any]:
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "dbt_prefect._compat.prefect_server" in (process.info["cmdline"] or []):
                if process.environ().get("PREFECT_HOME") == str(home):
                    found.append(process)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_build_without_an_api_url_starts_a_temporary_server_without_telemetry_and_stops_it(tmp_path: Path) -> None:
    import httpx

    project = make_shop_copy(tmp_path)
    home = tmp_path / "prefect-home"
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        command = subprocess.Popen(
            [DBT_PREFECT, "build", "--select", "raw_orders", "--project-dir", project, "--profiles-dir", project],
            cwd=tmp_path,
            env=_no_api_env(home),
            stdout=out,
            stderr=err,
        )
    # While the command runs, ask its server how it was started.
    settings = poll(lambda: _server_settings(home), lambda found: found is not None or command.poll() is not None, 300)
    assert command.wait(timeout=300) == 0, (tmp_path / "out").read_text()[-3000:] + (tmp_path / "err").read_text()
    stdout, stderr = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert settings is not None, "the command's temporary server never answered"
    assert settings["server"]["analytics_enabled"] is False  # no telemetry, without the user's help
    assert settings["server"]["ui"]["enabled"] is False
    assert settings["home"] == str(home)
    assert stderr.startswith(
        "No PREFECT_API_URL is set: starting a temporary Prefect server for this command "
        "(its runs are kept in the database of PREFECT_HOME).\n"
    )
    assert "Done. PASS=3 WARN=0 ERROR=0 SKIP=0 NO-OP=0 TOTAL=3" in stdout
    assert "telemetry" not in (stdout + stderr).lower()
    assert "View it in Prefect" not in stdout  # no link to a server that is gone
    assert (home / "prefect.db").is_file()  # the runs stay, as with Prefect's own temporary server
    assert _temporary_servers(home) == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{_server_url(settings)}/health", timeout=2)


def _server_settings(home: Path) -> dict[str, Any] | None:
    """The settings of the temporary server of PREFECT_HOME `home`, once it answers."""
    import httpx

    for process in _temporary_servers(home):
        try:
            port = process.cmdline()[-1]
            answer = httpx.get(f"http://127.0.0.1:{port}/api/admin/settings", timeout=2)
        except Exception:
            continue
        if answer.status_code == 200:
            return {**answer.json(), "port": port}
    return None


def _server_url(settings: dict[str, Any]) -> str:
    return f"http://127.0.0.1:{settings['port']}/api"


def test_a_temporary_server_that_does_not_start_in_time_names_what_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    from dbt_prefect.cli.main import Options, run_command

    project = make_shop_copy(tmp_path)
    home = tmp_path / "prefect-home"
    updates = {PREFECT_HOME: str(home), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 1}
    with temporary_settings(updates=updates, restore_defaults={PREFECT_API_URL}):
        code = run_command(["build"], Options(project_dir=project, profiles_dir=project))
    assert code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[1] == (
        "Error: No PREFECT_API_URL is set, and Prefect's temporary server did not answer within 1 s (is this "
        "machine busy?). Set PREFECT_API_URL to a running Prefect server (start one with `prefect server start`, "
        "then export PREFECT_API_URL=http://127.0.0.1:4200/api), or give the temporary server more time with "
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (e.g. 300)."
    )
    assert lines[2].startswith("Its log: ") and Path(lines[2].removeprefix("Its log: ")).is_file()
    assert captured.out == ""  # no flow run was attempted
    assert _temporary_servers(home) == []
    assert os.environ["PREFECT_API_URL"] != ""  # this process is left as it was


# -- the guide's automation: a notification when a test on an asset fails --------------
GUIDE = REPO_ROOT / "docs" / "how-to" / "deploy"


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("Content-Length", 0))
        self.received.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_the_guides_automation_notifies_when_a_test_on_the_asset_fails(tmp_path: Path) -> None:
    from prefect import flow
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client

    from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    _Receiver.received = []
    block = f"dbt-alerts-{uuid.uuid4().hex[:8]}"
    CustomWebhookNotificationBlock(
        name="dbt alerts",
        url=f"http://127.0.0.1:{receiver.server_address[1]}/notify",
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
    ).save(block)
    asset = "duckdb://shop/main_marts/product_revenue"
    created = run([sys.executable, GUIDE / "notify_on_failed_test.py", asset, f"custom-webhook/{block}"], cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    automation_id = created.stdout.strip().rsplit(" ", 1)[-1]
    assert created.stdout == f"Created automation 'dbt test failed on {asset}' with id {automation_id}\n"
    try:
        project = make_shop_copy(tmp_path)

        @flow
        def build_with_a_failing_test() -> None:
            runner = PrefectDbtRunner(
                settings=PrefectDbtSettings(project_dir=project, profiles_dir=project), raise_on_failure=False
            )
            # Two tests pass and one fails on product_revenue.
            runner.invoke(
                [
                    "build",
                    "--select",
                    "+product_revenue",
                    "--indirect-selection",
                    "cautious",
                    "--vars",
                    "{fail_demo_test: true}",
                ]
            )

        build_with_a_failing_test()
        notifications = poll(lambda: list(_Receiver.received), bool, timeout=90)
        assert notifications == [
            {
                "subject": f"dbt test failed on {asset}",
                "body": f"dbt test assert_demo_failure failed on {asset}: Got 10 results, configured to fail if != 0",
            }
        ]
        # And through the API: the automation's trigger fired, once.
        fired = poll(lambda: _automation_events(automation_id, "prefect.automation.triggered"), bool, timeout=30)
        assert len(fired) == 1
        assert fired[0].payload["triggering_event"]["event"] == "dbt_prefect.asset.check.failed"
    finally:
        with get_client(sync_client=True) as client:
            client.delete_automation(uuid.UUID(automation_id))
        receiver.shutdown()


def _automation_events(automation_id: str, name: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    with get_client(sync_client=True) as client:
        return client.read_events(
            filter=EventFilter(
                event=EventNameFilter(name=[name]),
                resource=EventResourceFilter(id=[f"prefect.automation.{automation_id}"]),
            ),
            limit=50,
        ).events
