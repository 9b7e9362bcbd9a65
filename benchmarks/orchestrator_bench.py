#!/usr/bin/env python3
"""Benchmark: PrefectDbtOrchestrator on Dask against PrefectDbtRunner's single dbt build.

    python benchmarks/orchestrator_bench.py [--models 200] [--workers 2 4] [--out result.json]

On a synthetic project (benchmarks/generate_project.py: N models, N/3 tests, one seed) on
PostgreSQL, for each worker count W it measures, all inside Prefect flows against a real
Prefect server:
  - runner: PrefectDbtRunner().invoke(["build", "--threads", W]), one dbt process;
  - orchestrator, cold: a fresh dask.distributed LocalCluster(W processes, 1 thread each),
    so every worker pays its one parse;
  - orchestrator, warm: a second build on the same cluster;
and per node: the Prefect task's own cost, dbt's per-invocation cost around the SQL, and
the first node's cost on a cold worker.

PostgreSQL comes from .ci/start_postgres.sh (installed with apt-get when missing); the
Prefect server is started on a free port unless PREFECT_API_URL is set. Standalone: it
needs only the `distributed` extra (prefect-dask, dask[distributed], dbt-postgres).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Dask's worker processes re-import the main script: they reuse the benchmark's work
# directory (inherited through the environment) instead of each leaving an empty one.
if "DBT_PREFECT_BENCH_WORK" not in os.environ:
    os.environ["DBT_PREFECT_BENCH_WORK"] = tempfile.mkdtemp(prefix="dbt-prefect-orch-bench-")
WORK = Path(os.environ["DBT_PREFECT_BENCH_WORK"])
os.environ.update(
    {
        "DO_NOT_TRACK": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"),
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        # Dask's statistical profiler samples sys._current_frames() every 10 ms; once, on
        # Python 3.11.7 with py-spy attached, a worker deadlocked there (inside gc) while
        # holding the GIL. The benchmark does not need it.
        "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    }
)
if "PREFECT_API_URL" not in os.environ:
    os.environ["PREFECT_HOME"] = str(WORK / "prefect-home")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_prefect() -> subprocess.Popen | None:
    if "PREFECT_API_URL" in os.environ:
        return None
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{WORK / 'prefect.db'}",
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    log = open(WORK / "prefect-server.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2):
                os.environ["PREFECT_API_URL"] = api
                return process
        except OSError:
            time.sleep(0.25)
    process.kill()
    raise SystemExit("the Prefect server did not start; see " + str(WORK / "prefect-server.log"))


def start_postgres(password: str) -> dict[str, str]:
    out = subprocess.run(
        ["bash", str(ROOT / ".ci" / "start_postgres.sh"), "start", str(WORK / "pgdata")],
        env={**os.environ, "PG_PASSWORD": password}, capture_output=True, text=True, check=True,
    )
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def stop_postgres() -> None:
    subprocess.run(["bash", str(ROOT / ".ci" / "start_postgres.sh"), "stop", str(WORK / "pgdata")], capture_output=True)


def write_profile(project: Path, pg: dict[str, str], password: str) -> None:
    """The project's profiles.yml for the benchmark's PostgreSQL (profile `bench`, schema `bench`);
    the password is a Prefect Secret block, not in the file."""
    from prefect.blocks.system import Secret

    Secret(value=password).save("orchestrator-bench-pg-password", overwrite=True)
    (project / "profiles.yml").write_text(
        f"""bench:
  target: dev
  outputs:
    dev:
      type: postgres
      host: {pg['PG_HOST']}
      port: {pg['PG_PORT']}
      user: {pg['PG_USER']}
      password: "{{{{ prefect.blocks.secret.orchestrator-bench-pg-password }}}}"
      dbname: postgres
      schema: bench
      threads: 4
"""
    )


def make_project(n_models: int, pg: dict[str, str], password: str) -> tuple[Path, dict]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from generate_project import generate

    project = WORK / f"bench-{n_models}"
    expected = generate(n_models, project)
    write_profile(project, pg, password)
    return project, expected


def run_runner(project: Path, threads: int) -> float:
    from prefect import flow

    from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings

    @flow(name="bench-runner")
    def bench() -> float:
        runner = PrefectDbtRunner(
            settings=PrefectDbtSettings(project_dir=project, profiles_dir=project), create_summary_artifact=False
        )
        started = time.perf_counter()
        runner.invoke(["build", "--threads", str(threads)])
        return time.perf_counter() - started

    return bench()


def run_orchestrator(project: Path, task_runner) -> tuple[float, list]:
    from prefect import flow

    from dbt_prefect import ExecutionMode, PrefectDbtOrchestrator, PrefectDbtSettings

    @flow(name="bench-orchestrator", task_runner=task_runner)
    def bench():
        # PER_NODE by name: the default became PER_WAVE, which runs every node in this process.
        orchestrator = PrefectDbtOrchestrator(
            settings=PrefectDbtSettings(project_dir=project, profiles_dir=project),
            execution_mode=ExecutionMode.PER_NODE,
        )
        started = time.perf_counter()
        result = orchestrator.run_build()
        return time.perf_counter() - started, result.results

    return bench()


def per_node(results: list) -> dict[str, float]:
    ran = [r for r in results if r.ran_to]
    warm = [r for r in ran if r.cold_start_seconds is None]
    dbt_overhead = [(r.ran_to - r.ran_from - r.execution_time) * 1000 for r in warm]
    task_overhead = [((r.finished - r.started) - (r.ran_to - r.ran_from)) * 1000 for r in warm]
    sql = [r.execution_time * 1000 for r in warm]
    colds = [r.cold_start_seconds for r in results if r.cold_start_seconds is not None]
    return {
        "nodes": len(results),
        "sql_ms_median": round(statistics.median(sql), 1) if sql else 0.0,
        "dbt_invocation_overhead_ms_median": round(statistics.median(dbt_overhead), 1) if dbt_overhead else 0.0,
        "task_overhead_ms_median": round(statistics.median(task_overhead), 1) if task_overhead else 0.0,
        "per_node_overhead_ms_median": round(
            statistics.median([a + b for a, b in zip(dbt_overhead, task_overhead)]), 1
        ) if warm else 0.0,
        "cold_first_node_s": [round(c, 2) for c in colds],
    }


@contextlib.contextmanager
def profiled(directory: Path | None, label: str, cluster) -> Iterator[None]:
    """py-spy on this process and the cluster's workers while the block runs (GIL holders only:
    the samples are Python CPU, not threads waiting on I/O or locks)."""
    if directory is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    from distributed import Client

    with Client(cluster.scheduler_address) as client:
        pids = {"flow": os.getpid(), **{f"worker{i}": pid for i, pid in enumerate(client.run(os.getpid).values())}}
    spies = [
        subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--gil", "-r", "100", "-f", "raw",
             "-o", str(directory / f"{label}-{name}.raw"), "--pid", str(pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            spy.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--profile-dir", type=Path, default=None,
                        help="py-spy (GIL samples, raw format) of the flow process and every Dask worker during the warm build")
    args = parser.parse_args()

    server = start_prefect()
    password = secrets.token_urlsafe(16)
    pg = start_postgres(password)
    report: dict = {"models": args.models, "cores": os.cpu_count(), "runs": []}
    try:
        project, expected = make_project(args.models, pg, password)
        report["nodes"] = expected["nodes"]
        print(f"project: {expected['nodes']} nodes; warming up with one runner build", flush=True)
        run_runner(project, 4)
        from distributed import LocalCluster
        from prefect_dask import DaskTaskRunner

        for workers in args.workers:
            runner_s = run_runner(project, workers)
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
                cold_s, cold_results = run_orchestrator(project, DaskTaskRunner(address=cluster.scheduler_address))
                with profiled(args.profile_dir, f"w{workers}", cluster):
                    warm_s, warm_results = run_orchestrator(project, DaskTaskRunner(address=cluster.scheduler_address))
            row = {
                "workers": workers,
                "runner_build_s": round(runner_s, 2),
                "orchestrator_cold_s": round(cold_s, 2),
                "orchestrator_warm_s": round(warm_s, 2),
                "warm_ratio": round(warm_s / runner_s, 2),
                "cold_ratio": round(cold_s / runner_s, 2),
                "cold": per_node(cold_results),
                "warm": per_node(warm_results),
            }
            report["runs"].append(row)
            print(json.dumps(row), flush=True)
    finally:
        stop_postgres()
        if server is not None:
            server.terminate()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
