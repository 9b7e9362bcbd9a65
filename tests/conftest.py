"""Shared fixtures: one real Prefect server per test session, isolated Prefect and dbt state.

The environment is set before Prefect is imported, so the in-process client, the
events worker and any subprocess the tests start all talk to the same server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
INTEGRATION_PROJECT = REPO_ROOT / "integration_project"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    log_path = _SESSION_HOME / "server.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(_SERVER_PORT)],
            env=server_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{API_URL}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(
                f"prefect server did not start; its log:\n{log_path.read_text()[-4000:]}"
            )
        time.sleep(0.25)
    yield API_URL
    # Send what Prefect's background workers still hold before the server goes away.
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


def make_shop_copy(destination: Path) -> Path:
    """A private copy of the integration project, with its own DuckDB file and the package linked in."""
    project = destination / "integration_project"
    shutil.copytree(
        INTEGRATION_PROJECT,
        project,
        ignore=shutil.ignore_patterns("target", "logs", "dbt_packages", "*.duckdb*", "flows", "package-lock.yml"),
    )
    profiles = project / "profiles.yml"
    profiles.write_text(
        profiles.read_text().replace(
            "{{ env_var('SHOP_DUCKDB_PATH', 'shop.duckdb') }}", str(destination / "shop.duckdb")
        )
    )
    packages_yml = project / "packages.yml"
    packages_yml.write_text(packages_yml.read_text().replace("local: ..", f"local: {REPO_ROOT}"))
    # What `dbt deps` does for a local package, without a dbt invocation per test.
    packages = project / "dbt_packages"
    packages.mkdir()
    (packages / "dbt_prefect").symlink_to(REPO_ROOT, target_is_directory=True)
    return project


@pytest.fixture()
def shop_project(tmp_path: Path) -> Path:
    return make_shop_copy(tmp_path)


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
    if _EXIT_STATUS and os.environ.get("DBT_PREFECT_TESTS_KEEP_INTERPRETER") != "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
