"""Every fixture of the test suite: one real Prefect server, one PostgreSQL server and one
Dask cluster per test session, isolated Prefect and dbt state.

The environment is set before Prefect is imported, so the in-process client, the
events worker and any subprocess the tests start all talk to the same server. Keep that
block first: nothing above it may import Prefect (or anything that does).

Helpers the tests import are plain modules in tests/support/, never this file.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Each pytest process (each pytest-xdist worker) gets a temporary directory of its own, for
# itself and every subprocess, so a test that checks what is left in it sees only its own.
# Locks shared by the workers stay in the machine's one (DBT_PREFECT_TESTS_SHARED_TMP).
# Beside the machine's, not inside pytest-xdist's controller's: PostgreSQL's socket path
# (in its data directory) must stay under 108 characters.
os.environ.setdefault("DBT_PREFECT_TESTS_SHARED_TMP", tempfile.gettempdir())
_PROCESS_TMP = tempfile.mkdtemp(
    prefix=f"dbt-prefect-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-",
    dir=os.environ["DBT_PREFECT_TESTS_SHARED_TMP"],
)
os.environ["TMPDIR"] = _PROCESS_TMP
tempfile.tempdir = None  # read TMPDIR again

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="dbt-prefect-tests-"))
_SERVER_PORT = _free_port()
API_URL = f"http://127.0.0.1:{_SERVER_PORT}/api"

os.environ.update(
    {
        "PREFECT_HOME": str(_SESSION_HOME / "prefect-home"),
        "PREFECT_API_URL": API_URL,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        # Quiet the console; tests read logs back from the server instead.
        "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "INFO"),
    }
)
os.environ.pop("DBT_PROJECT_DIR", None)
os.environ.pop("DBT_PROFILES_DIR", None)

# Prefect's environment is set: the helpers may import it.
from support.postgres import SECRET_BLOCK, Postgres, PostgresUnavailable, start_postgres, stop_postgres  # noqa: E402
from support.prefect_server import start_prefect_server, stop_prefect_server  # noqa: E402
from support.projects import make_shop_copy  # noqa: E402


@pytest.fixture(scope="session")
def prefect_server():
    """A real `prefect server` on 127.0.0.1, started once for the whole session."""
    server_env = dict(os.environ)
    server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = (
        f"sqlite+aiosqlite:///{_SESSION_HOME / 'prefect.db'}"
    )
    server_env["PREFECT_SERVER_UI_ENABLED"] = "false"
    # invoke() returns once the server has stored its asset events; the server writes
    # events in batches, every 5 s by default.
    server_env["PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL"] = "0.5"
    process = start_prefect_server(_SERVER_PORT, server_env, _SESSION_HOME / "server.log")
    yield API_URL
    # Send what Prefect's background workers still hold before the server goes away.
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)
    stop_prefect_server(process)
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture()
def shop_project(tmp_path: Path) -> Path:
    return make_shop_copy(tmp_path)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server on 127.0.0.1, started once for the session by .ci/start_postgres.sh.

    The orchestrator tests and test_macros.py's Postgres runs share it. Skips when
    PostgreSQL cannot be installed here.
    """
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        stop_postgres(server)


@pytest.fixture(scope="session")
def pg_secret_block(prefect_server: str, postgres: Postgres) -> str:
    """The Postgres password, saved as a Prefect Secret block."""
    from prefect.blocks.system import Secret

    Secret(value=postgres.password).save(SECRET_BLOCK, overwrite=True)
    return SECRET_BLOCK


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[Any]:
    """A dask.distributed LocalCluster: 2 worker processes, one thread each."""
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        # The scheduler serves HTTP even without a dashboard; a free port, so that two
        # pytest-xdist workers do not both ask for 8787.
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
    )
    try:
        yield cluster
    finally:
        cluster.close(timeout=30)


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Release dbt's adapters (and the DuckDB handles they hold) before interpreter shutdown.
    import gc

    from dbt.adapters.factory import reset_adapters

    reset_adapters()
    gc.collect()
    _EXIT_STATUS.append(int(exitstatus))


def pytest_unconfigure(config: pytest.Config) -> None:
    # DuckDB's bindings print "nanobind: leaked ..." at interpreter shutdown when dbt's
    # thread-local connections outlive the session; that noise would follow pytest's
    # summary line. Everything is flushed and the server stopped by now, so exit here.
    shutil.rmtree(_PROCESS_TMP, ignore_errors=True)
    if _EXIT_STATUS and os.environ.get("DBT_PREFECT_TESTS_KEEP_INTERPRETER") != "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
