#!/usr/bin/env python3
"""Set up and run dbt-prefect's two everyday jobs, with nothing but Python 3.11+ and pip.

    python3 dev.py demo    # build the integration project in a Prefect flow
    python3 dev.py test    # run the test suite (on the newest Prefect dbt-prefect allows)
    python3 dev.py test-prefect38  # the core runner and asset tests on Prefect 3.8
    python3 dev.py lint    # ruff (lint and format) and mypy on python/
    python3 dev.py docs    # build the documentation site into site/ (strict), check its links
    python3 dev.py docs --serve  # serve it on http://127.0.0.1:8000 while you edit
    python3 dev.py stop-server

Each creates `.venv/` and installs the project into it on first use.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import urllib.request
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".dbt-prefect-installed"
PREFECT_HOME = ROOT / ".prefect-home"
DEMO_API_URL = "http://127.0.0.1:4200/api"

# Prints the Prefect UI pages of the demo's latest flow run, one "label: url" a line, in
# the UI the server gives by default (its /ui-settings: V2, under /v2/, unless turned off
# with PREFECT_SERVER_UI_V2_ENABLED=false). It runs in .venv, where the Prefect client and dbt-prefect's link
# helpers are. Only pages Prefect's open-source UI serves: it has no assets page, so the
# assets are shown by the run report's Lineage and Assets sections and by the event feed
# filtered to the run's asset events.
DEMO_LINKS = """
import datetime as dt
import sys

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType, FlowFilter, FlowFilterName,
)
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort

from dbt_prefect.runner.report import ui_pages

started = dt.datetime.fromtimestamp(float(sys.argv[2]), dt.timezone.utc)
with get_client(sync_client=True) as client:
    runs = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[sys.argv[1]])), sort=FlowRunSort.START_TIME_DESC, limit=1
    )
    run = runs[0] if runs and runs[0].start_time and runs[0].start_time >= started else None
    if run is None:
        sys.exit(f"no run of flow {sys.argv[1]!r} started after the demo did")
    pages = ui_pages()
    if pages is None or not pages.served:
        sys.exit(f"flow run {run.id}: this Prefect server serves no UI")
    reports = client.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]), type=ArtifactFilterType(any_=["markdown"])
        ),
        sort=ArtifactSort.CREATED_DESC,
        limit=20,
    )
    # The latest report that lists assets: after `--fail`, the retry's report has none.
    report = next((a for a in reports if "\\n## Assets (" in (a.data or "")), None)
    until = (run.end_time or dt.datetime.now(dt.timezone.utc)) + dt.timedelta(minutes=1)
    print(f"flow run, its dbt task runs and logs: {pages.flow_run(run.id)}")
    if report is not None:
        print(f"run report, with its Lineage picture and Assets: {pages.artifact(report.id)}")
    print(f"asset events (materializations, lineage): {pages.event_feed(run.id, run.start_time, until)}")
"""

QUIET_ENV = {
    "DO_NOT_TRACK": "1",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def ensure_venv(venv_dir: Path = VENV, *pins: str) -> Path:
    """The venv's python, with dbt-prefect installed (and `pins`, e.g. an older Prefect)."""
    if sys.version_info < (3, 11):
        sys.exit(f"dbt-prefect needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    python = venv_dir / PYTHON.relative_to(VENV)
    stamp = venv_dir / STAMP.name
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + " ".join(pins).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted and python.exists():
        return python
    if not python.exists():
        print(f"creating {venv_dir}", flush=True)
        venv.create(venv_dir, with_pip=True)
    print(f"installing dbt-prefect and its dependencies into {venv_dir.name} (about a minute the first time)", flush=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[dev]", *pins], check=True)
    stamp.write_text(wanted)
    return python


def server_is_up(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def ensure_demo_server(env: dict[str, str]) -> str:
    """The Prefect API to use: $PREFECT_API_URL if set, else a local server we start once."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if server_is_up(DEMO_API_URL):
        return DEMO_API_URL
    PREFECT_HOME.mkdir(exist_ok=True)
    log = open(PREFECT_HOME / "server.log", "ab")
    print("starting a local Prefect server on http://127.0.0.1:4200 (log: .prefect-home/server.log)", flush=True)
    process = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", "4200"],
        # invoke() returns once the server has stored its asset events, which it writes
        # in batches (every 5 s by default).
        env={**env, "PREFECT_HOME": str(PREFECT_HOME), "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.5"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    (PREFECT_HOME / "server.pid").write_text(str(process.pid))
    deadline = time.monotonic() + 120
    while not server_is_up(DEMO_API_URL):
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the Prefect server did not start; see {PREFECT_HOME / 'server.log'}")
        time.sleep(0.5)
    return DEMO_API_URL


def demo(extra: list[str]) -> int:
    ensure_venv()
    env = {**os.environ, **QUIET_ENV}
    api_url = ensure_demo_server(env)
    env["PREFECT_API_URL"] = api_url
    started = time.time()
    code = subprocess.run(
        [str(PYTHON), str(ROOT / "integration_project" / "flows" / "build_shop.py"), *extra], env=env
    ).returncode
    links = subprocess.run(
        [str(PYTHON), "-c", DEMO_LINKS, "build-shop", str(started)], env=env, capture_output=True, text=True
    )
    if links.returncode == 0:
        print("\nSee in the Prefect UI:")
        for line in links.stdout.splitlines():
            print(f"  {line}")
    else:
        print(f"\nNo Prefect UI page to show: {(links.stderr.strip().splitlines() or ['?'])[-1]}")
    if api_url == DEMO_API_URL:
        print("The local Prefect server keeps running; stop it with: python3 dev.py stop-server")
    return code


def parallel(extra: list[str]) -> list[str]:
    """pytest-xdist's flags: one worker per core (at most 4), whole files to a worker, so a
    file's module fixtures are built once. Each worker has its own Prefect server,
    PostgreSQL and Dask cluster; most tests wait on a server, so two share 2 cores well.
    A `-n` or `-p no:xdist` of the caller wins."""
    if "no:xdist" in extra or any(arg.startswith(("-n", "--numprocesses")) for arg in extra):
        return []
    workers = min(4, os.cpu_count() or 1)
    return ["-n", str(workers), "--dist", "loadfile"] if workers > 1 else []


def test(extra: list[str]) -> int:
    ensure_venv()
    env = {**os.environ, **QUIET_ENV}
    return subprocess.run([str(PYTHON), "-m", "pytest", *parallel(extra), *extra], cwd=ROOT, env=env).returncode


# The oldest Prefect dbt-prefect supports, and the tests that cover the runner's contract
# with it: task runs, states, logs, assets and events.
PREFECT_38 = "prefect>=3.8,<3.9"
CORE_TESTS = ["tests/unit", "tests/test_runner.py", "tests/test_assets.py"]


def test_prefect38(extra: list[str]) -> int:
    python = ensure_venv(ROOT / ".venv-prefect38", PREFECT_38)
    env = {**os.environ, **QUIET_ENV}
    version = subprocess.run([str(python), "-c", "import prefect; print(prefect.__version__)"], capture_output=True, text=True)
    print(f"core tests on prefect {version.stdout.strip()}", flush=True)
    args = extra or CORE_TESTS
    return subprocess.run([str(python), "-m", "pytest", *parallel(args), *args], cwd=ROOT, env=env).returncode


def lint(extra: list[str]) -> int:
    ensure_venv()
    checks = [
        [str(BIN / "ruff"), "check", "python"],
        [str(BIN / "ruff"), "format", "--check", "python"],
        [str(BIN / "mypy")],
    ]
    failed = [check for check in checks if subprocess.run(check, cwd=ROOT).returncode != 0]
    for check in failed:
        print(f"failed: {' '.join(Path(check[0]).name.split() + check[1:])}", flush=True)
    return 1 if failed else 0


def ensure_docs_tools() -> Path:
    """The venv's python, with the `docs` extra (MkDocs, Material, mkdocstrings) installed too."""
    python = ensure_venv()
    stamp = VENV / ".dbt-prefect-docs-installed"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    print("installing the documentation tools (the `docs` extra) into .venv", flush=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[dev,docs]"], check=True)
    stamp.write_text(wanted)
    return python


def docs(extra: list[str]) -> int:
    """Build the site strictly into site/ and check its own links; or serve it with --serve."""
    python = ensure_docs_tools()
    # NO_MKDOCS_2_WARNING: Material's start-up banner about its end of life, not about this site.
    env = {**os.environ, **QUIET_ENV, "NO_MKDOCS_2_WARNING": "1"}
    if "--serve" in extra:
        port = extra[extra.index("--port") + 1] if "--port" in extra else "8000"
        print(f"serving the documentation on http://127.0.0.1:{port}/ (Ctrl-C stops it)", flush=True)
        try:
            return subprocess.run(
                [str(python), "-m", "mkdocs", "serve", "--dev-addr", f"127.0.0.1:{port}"], cwd=ROOT, env=env
            ).returncode
        except KeyboardInterrupt:
            return 0
    started = time.monotonic()
    # --strict: a broken link or anchor, a missing reference or snippet, a page that is not
    # in the nav or a nav entry with no page fails the build (mkdocs.yml's `validation`).
    build = subprocess.run([str(python), "-m", "mkdocs", "build", "--strict", "--site-dir", "site"], cwd=ROOT, env=env)
    if build.returncode != 0:
        print("failed: mkdocs build --strict", flush=True)
        return build.returncode
    print(f"built the site into site/ in {time.monotonic() - started:.1f} s", flush=True)
    # The built HTML itself: every link between its pages resolves, and no page loads
    # anything from outside the site (fonts, scripts, images).
    return subprocess.run([str(python), str(ROOT / "docs" / "hooks" / "check_site.py"), "site"], cwd=ROOT).returncode


def stop_server() -> int:
    pid_file = PREFECT_HOME / "server.pid"
    if not pid_file.exists():
        print("no local Prefect server was started by dev.py")
        return 0
    import signal

    try:
        os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        print("stopped the local Prefect server")
    except ProcessLookupError:
        print("the local Prefect server was not running")
    pid_file.unlink()
    return 0


def main() -> int:
    commands = {
        "demo": demo,
        "test": test,
        "test-prefect38": test_prefect38,
        "lint": lint,
        "docs": docs,
        "stop-server": lambda extra: stop_server(),
    }
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
