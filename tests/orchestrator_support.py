"""Fixtures for the orchestrator tests: a real PostgreSQL, a real dask.distributed cluster.

PostgreSQL is started by .ci/start_postgres.sh (which installs Debian's package when it
is missing) in a private data directory on a free loopback port, once per session. The
password lives in a Prefect Secret block; every profile reads it with
``{{ prefect.blocks.secret.<name> }}``, so every build checks that a block secret reaches
the Dask workers.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PG_SHOP = Path(__file__).resolve().parent / "projects" / "pg_shop"
START_POSTGRES = REPO_ROOT / ".ci" / "start_postgres.sh"
SECRET_BLOCK = "orchestrator-tests-pg-password"


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str

    def connect(self) -> Any:
        import psycopg2

        connection = psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname="postgres"
        )
        connection.autocommit = True
        return connection

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.connect() as connection, connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def relations(self, schema: str) -> set[str]:
        rows = self.query(
            "select table_name from information_schema.tables where table_schema = %s", schema
        )
        return {r[0] for r in rows}

    def drop_schemas(self, prefix: str) -> None:
        rows = self.query(
            "select schema_name from information_schema.schemata where schema_name like %s", prefix + "%"
        )
        for (schema,) in rows:
            self.query(f'drop schema if exists "{schema}" cascade')


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server on 127.0.0.1, started once for the session."""
    if shutil.which("bash") is None:
        pytest.skip("bash is needed to start PostgreSQL with .ci/start_postgres.sh")
    data_dir = Path(tempfile.mkdtemp(prefix="dbt-prefect-pg-")) / "data"
    password = secrets.token_urlsafe(18)
    env = {**os.environ, "PG_PASSWORD": password}
    started = subprocess.run(
        ["bash", str(START_POSTGRES), "start", str(data_dir)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    if started.returncode == 3:
        pytest.skip(f"PostgreSQL cannot be installed here: {started.stderr.strip()[-500:]}")
    if started.returncode != 0:
        raise RuntimeError(f"start_postgres.sh failed:\n{started.stdout}\n{started.stderr[-4000:]}")
    values = dict(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
    server = Postgres(values["PG_HOST"], int(values["PG_PORT"]), values["PG_USER"], password)
    try:
        yield server
    finally:
        subprocess.run(["bash", str(START_POSTGRES), "stop", str(data_dir)], capture_output=True, timeout=120)
        shutil.rmtree(data_dir.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_secret_block(prefect_server: str, postgres: Postgres) -> str:
    """The Postgres password, saved as a Prefect Secret block."""
    from prefect.blocks.system import Secret

    Secret(value=postgres.password).save(SECRET_BLOCK, overwrite=True)
    return SECRET_BLOCK


def make_pg_project(
    destination: Path, postgres: Postgres, schema: str, name: str = "pg_shop", threads: int = 4
) -> Path:
    """A private copy of tests/projects/pg_shop writing to `schema`, renamed to `name`.

    profiles.yml takes the password from the Prefect Secret block, never in plain text.
    """
    project = destination / name
    shutil.copytree(PG_SHOP, project, ignore=shutil.ignore_patterns("target", "logs"))
    if name != "pg_shop":
        dbt_project = project / "dbt_project.yml"
        dbt_project.write_text(dbt_project.read_text().replace("pg_shop", name))
    write_pg_profile(project, postgres, schema, name, threads)
    return project


def write_pg_profile(project: Path, postgres: Postgres, schema: str, name: str, threads: int) -> None:
    """profiles.yml for `name` on the test PostgreSQL, the password from the Prefect Secret
    block (never in plain text); and an empty `schema` to write to."""
    (project / "profiles.yml").write_text(
        f"""{name}:
  target: dev
  outputs:
    dev:
      type: postgres
      host: {postgres.host}
      port: {postgres.port}
      user: {postgres.user}
      password: "{{{{ prefect.blocks.secret.{SECRET_BLOCK} }}}}"
      dbname: postgres
      schema: {schema}
      threads: {threads}
"""
    )
    postgres.drop_schemas(schema)


def make_small_project(
    destination: Path, postgres: Postgres, schema: str, name: str, models: dict[str, str]
) -> Path:
    """A minimal project `name` with the given models (file name -> SQL), writing to `schema`."""
    project = destination / name
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        f"name: {name}\nversion: '1.0.0'\nconfig-version: 2\nprofile: {name}\n"
        "model-paths: ['models']\nflags:\n  send_anonymous_usage_stats: false\n"
    )
    for file_name, sql in models.items():
        (project / "models" / file_name).write_text(sql)
    write_pg_profile(project, postgres, schema, name, threads=2)
    return project


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[Any]:
    """A dask.distributed LocalCluster: 2 worker processes, one thread each."""
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    try:
        yield cluster
    finally:
        cluster.close(timeout=30)


def worker_pids(cluster: Any) -> set[int]:
    from distributed import Client

    with Client(cluster) as client:
        return set(client.run(os.getpid).values())


@dataclass
class Orchestrated:
    flow_run_id: Any
    state: Any
    result: Any = None
    error: Optional[BaseException] = None
    orchestrator: Any = None


def orchestrate(project: Path, task_runner: Any, build: Optional[dict[str, Any]] = None, **options: Any) -> Orchestrated:
    """Run PrefectDbtOrchestrator(**options).run_build(**build) in a fresh flow run on `task_runner`."""
    from prefect import flow
    from prefect.context import FlowRunContext

    from dbt_prefect import PrefectDbtSettings
    from dbt_prefect import PrefectDbtOrchestrator

    captured: dict[str, Any] = {}

    @flow(name="dbt-orchestrator-test", task_runner=task_runner)
    def orchestrated_flow() -> None:
        captured["flow_run_id"] = FlowRunContext.get().flow_run.id
        orchestrator = PrefectDbtOrchestrator(
            settings=PrefectDbtSettings(project_dir=project, profiles_dir=project), **options
        )
        captured["orchestrator"] = orchestrator
        try:
            captured["result"] = orchestrator.run_build(**(build or {}))
        except BaseException as exc:
            captured["error"] = exc
            raise

    state = orchestrated_flow(return_state=True)
    return Orchestrated(
        flow_run_id=captured["flow_run_id"],
        state=state,
        result=captured.get("result"),
        error=captured.get("error"),
        orchestrator=captured.get("orchestrator"),
    )


def dask_runner(cluster: Any) -> Any:
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=cluster.scheduler_address)
