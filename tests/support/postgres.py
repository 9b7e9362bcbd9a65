"""The tests' PostgreSQL: a throwaway server started by .ci/start_postgres.sh.

.ci/start_postgres.sh installs Debian's package when it is missing (as root), and starts a
private cluster in its own data directory on a free loopback port, with a password over
TCP. The orchestrator tests keep that password in a Prefect Secret block (SECRET_BLOCK);
every profile they write reads it with ``{{ prefect.blocks.secret.<name> }}``, so every
build checks that a block secret reaches the Dask workers.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

START_POSTGRES = Path(__file__).resolve().parents[2] / ".ci" / "start_postgres.sh"
SECRET_BLOCK = "orchestrator-tests-pg-password"


class PostgresUnavailable(Exception):
    """PostgreSQL cannot be installed or started on this machine (the tests skip)."""


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    data_dir: Optional[Path] = None

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


def start_postgres() -> Postgres:
    """Start a PostgreSQL server on 127.0.0.1 in a new temporary data directory, with a random password.

    Raises PostgresUnavailable when it cannot be installed here (no bash, or
    start_postgres.sh exits 3), RuntimeError when it fails otherwise.
    """
    if shutil.which("bash") is None:
        raise PostgresUnavailable("bash is needed to start PostgreSQL with .ci/start_postgres.sh")
    data_dir = Path(tempfile.mkdtemp(prefix="dbt-prefect-pg-")) / "data"
    password = secrets.token_urlsafe(18)
    env = {**os.environ, "PG_PASSWORD": password}
    # Under pytest-xdist every worker starts its own server; the lock keeps two workers
    # from running apt-get (and its dpkg lock) at once on a machine without PostgreSQL.
    shared_tmp = Path(os.environ.get("DBT_PREFECT_TESTS_SHARED_TMP", tempfile.gettempdir()))
    with open(shared_tmp / "dbt-prefect-start-postgres.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = subprocess.run(
            ["bash", str(START_POSTGRES), "start", str(data_dir)],
            env=env, capture_output=True, text=True, timeout=600,
        )
    if started.returncode == 3:
        shutil.rmtree(data_dir.parent, ignore_errors=True)
        raise PostgresUnavailable(f"PostgreSQL cannot be installed here: {started.stderr.strip()[-500:]}")
    if started.returncode != 0:
        raise RuntimeError(f"start_postgres.sh failed:\n{started.stdout}\n{started.stderr[-4000:]}")
    values = dict(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
    return Postgres(values["PG_HOST"], int(values["PG_PORT"]), values["PG_USER"], password, data_dir)


def stop_postgres(server: Postgres) -> None:
    """Stop a server start_postgres started, and remove its data directory."""
    if server.data_dir is None:
        return
    subprocess.run(["bash", str(START_POSTGRES), "stop", str(server.data_dir)], capture_output=True, timeout=120)
    shutil.rmtree(server.data_dir.parent, ignore_errors=True)
