#!/usr/bin/env python3
"""Benchmark: how a PER_NODE build scales with the number of Dask workers, on I/O-bound nodes.

    python benchmarks/scaling_bench.py [--workers 1 2 4 8] [--models 100] [--width 16] [--sleep 0.5] [--out scaling.json]
                                       [--bare] [--plain]

The project (written here, on PostgreSQL): `--models` table models, each of which runs
`pg_sleep(--sleep)` exactly once, in layers `--width` wide (100 models, width 16: six
layers of 16 and one of 4). Every model reads one or two models of the layer below. No
seeds, no tests. A node then costs its sleep plus what dbt, dbt-prefect and Prefect spend
around it, so the build should scale with the workers until that CPU runs out.

For each worker count W, on a fresh dask.distributed LocalCluster(W processes, 1 thread
each), all inside Prefect flows against a real Prefect server:
  - a cold build (every worker pays its parse), reported but not judged;
  - the measured warm build on the same cluster: `PrefectDbtOrchestrator(
    execution_mode=PER_NODE).run_build()`, no concurrency limit (the W single-threaded
    workers are the only limit).
It reports the wall time of run_build, the speedup over W = 1, the ideal wall (the sum
over layers of ceil(width / W) sleeps), and the CPU seconds per node spent, during the
build, in the flow's process (which also hosts the LocalCluster's scheduler and nannies),
in the workers, in the Prefect server and in PostgreSQL. The issue's target: at W = 2, 4, 8, at least 80%
of the ideal speedup over W = 1. It is reported, never asserted.
`--bare` adds the floor: the same DAG as no-op Prefect tasks on the same cluster. `--plain`
adds plain dbt's CPU per node on the same project with no Prefect, so that what the
workers spend above the bare task splits into dbt's work and dbt-prefect's.
`--report FILE` prints the tables of a JSON report again, without running anything.

PostgreSQL and the Prefect server come from orchestrator_bench.py's helpers.
"""

from __future__ import annotations

# First: it sets the environment (telemetry off, PREFECT_HOME) before Prefect is imported.
import orchestrator_bench as bench  # isort: skip

import argparse
import contextlib
import json
import math
import os
import resource
import secrets
import shutil
import statistics
import sys
import time
from pathlib import Path

import psutil  # a dependency of dask.distributed

TARGET_SHARE_OF_IDEAL_SPEEDUP = 0.80
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- the project ------------------------------------------------------------------------
def plan_layers(n_models: int, width: int) -> list[list[str]]:
    layers: list[list[str]] = []
    for start in range(0, n_models, width):
        depth = len(layers)
        layers.append([f"s{depth:02d}_{i:02d}" for i in range(min(width, n_models - start))])
    return layers


def parents_of(index: int, below: list[str]) -> list[str]:
    """Two parents for even positions, one for odd: a DAG with some fan-in, deterministic."""
    first = below[index % len(below)]
    second = below[(index + 1) % len(below)]
    return [first, second] if index % 2 == 0 and second != first else [first]


def model_sql(parents: list[str], sleep: float) -> str:
    # The sleep sits in a one-row FROM subquery, which PostgreSQL scans once; reading the
    # parents in scalar subqueries (evaluated once each) does not repeat it.
    if not parents:
        return f"select 1 as id\nfrom (select pg_sleep({sleep})) as slept\n"
    reads = " + ".join(f"(select count(*) from {{{{ ref('{p}') }}}})" for p in parents)
    return f"select {reads} as id\nfrom (select pg_sleep({sleep})) as slept\n"


def write_sleep_project(destination: Path, layers: list[list[str]], sleep: float) -> None:
    if destination.exists():
        shutil.rmtree(destination)
    models = destination / "models"
    models.mkdir(parents=True)
    (destination / "dbt_project.yml").write_text(
        "name: bench\nversion: '1.0'\nconfig-version: 2\nprofile: bench\nmodel-paths: [models]\n"
        "models:\n  bench:\n    +materialized: table\n"  # a view would not run its query
    )
    for depth, layer in enumerate(layers):
        below = layers[depth - 1] if depth else []
        for index, name in enumerate(layer):
            (models / f"{name}.sql").write_text(model_sql(parents_of(index, below) if below else [], sleep))


def ideal_wall(layers: list[list[str]], workers: int, sleep: float) -> float:
    return sum(math.ceil(len(layer) / workers) for layer in layers) * sleep


# -- CPU accounting --------------------------------------------------------------------------
def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def cpu_of(pids: list[int], with_children: bool = False) -> float:
    """User + system CPU seconds of these processes (and of their descendants)."""
    total = 0.0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            family = [process, *process.children(recursive=True)] if with_children else [process]
            for member in family:
                times = member.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def machine_busy_cpu() -> float:
    """CPU seconds the whole machine spent busy (all processes, everyone's), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def postgres_pid() -> int | None:
    try:
        return int((bench.WORK / "pgdata" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def wait_until_idle(pids: list[int], max_wait: float = 30.0, window: float = 0.5, threshold: float = 0.10) -> float:
    """Wait until these processes (the server) use under `threshold` of a core, so one build's backlog
    is not billed to the next."""
    started = time.monotonic()
    while time.monotonic() - started < max_wait:
        before = cpu_of(pids, with_children=True)
        time.sleep(window)
        if (cpu_of(pids, with_children=True) - before) / window < threshold:
            break
    return time.monotonic() - started


# -- where run_build's time goes, in the flow's process ---------------------------------------
# Steps of run_build, timed by wrapping them: (module, object, attribute) -> phase name.
PHASES = {
    ("dbt_prefect.orchestrator.orchestrator", "PrefectDbtOrchestrator", "_prepare"): "plan (parse, select)",
    ("dbt_prefect.orchestrator.per_node", "PerNodeBuild", "_submit"): "submit the node tasks",
    ("dbt_prefect.orchestrator.per_node", "PerNodeBuild", "_wait_until_recorded"): "after the nodes, all",
    # The parts of "after the nodes, all" (the rest of it is flushing the workers' events and logs):
    ("dbt_prefect.orchestrator.per_node", None, "forget_executions"): "of it: forget executions",
    ("dbt_prefect.runner.readback", None, "flush_events_and_logs"): "of it: flow's flush",
    ("dbt_prefect.orchestrator.per_node", None, "wait_until_recorded"): "of it: readback with flow's flush",
    ("dbt_prefect.orchestrator.orchestrator", None, "publish_node_build_report"): "summary artifact",
}


@contextlib.contextmanager
def timed_phases(seconds: dict[str, float]):
    """Add each phase's duration to `seconds` while the block runs. A step that has been renamed
    is left out, not an error: these are internals."""
    import importlib

    restore = []
    for (module_name, owner_name, attribute), phase in PHASES.items():
        owner = importlib.import_module(module_name)
        if owner_name is not None:
            owner = getattr(owner, owner_name, None)
        original = getattr(owner, attribute, None)
        if original is None:
            continue

        def timed(*args, _original=original, _phase=phase, **kwargs):
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                seconds[_phase] = seconds.get(_phase, 0.0) + time.perf_counter() - started

        setattr(owner, attribute, timed)
        restore.append((owner, attribute, original))
    try:
        yield
    finally:
        for owner, attribute, original in restore:
            setattr(owner, attribute, original)


# -- one build ----------------------------------------------------------------------------
def parse_once(project: Path) -> None:
    """A parse in this process first, so every measured build's planning is a partial parse."""
    from prefect import flow

    from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings

    @flow(name="scaling-bench-parse")
    def parse() -> None:
        settings = PrefectDbtSettings(project_dir=project, profiles_dir=project)
        PrefectDbtRunner(settings=settings, create_summary_artifact=False).invoke(["parse"])

    parse()


def measured_build(
    project: Path, scheduler_address: str, watched: dict[str, list[int]], concurrency: int | None
) -> dict:
    """One PER_NODE run_build on the cluster; its wall time, its node results and the CPU deltas."""
    from prefect import flow
    from prefect_dask import DaskTaskRunner

    from dbt_prefect import ExecutionMode, PrefectDbtOrchestrator, PrefectDbtSettings

    def snapshot() -> dict[str, float]:
        return {
            "flow": own_cpu(),
            "workers": cpu_of(watched["workers"]),
            "server": cpu_of(watched["server"], with_children=True),
            "postgres": cpu_of(watched["postgres"], with_children=True),
            "machine": machine_busy_cpu(),
        }

    @flow(name="scaling-bench-build", task_runner=DaskTaskRunner(address=scheduler_address))
    def build() -> dict:
        orchestrator = PrefectDbtOrchestrator(
            settings=PrefectDbtSettings(project_dir=project, profiles_dir=project),
            execution_mode=ExecutionMode.PER_NODE,
            concurrency=concurrency,
        )
        phases: dict[str, float] = {}
        with timed_phases(phases):
            cpu_before = snapshot()
            started = time.time()
            result = orchestrator.run_build()
            finished = time.time()
            cpu_after = snapshot()
        return {
            "started": started,
            "finished": finished,
            "results": result.results,
            "cpu_s": {k: cpu_after[k] - cpu_before[k] for k in cpu_before},
            "phases_s": phases,
        }

    return build()


def bare_build(layers: list[list[str]], scheduler_address: str, watched: dict[str, list[int]]) -> dict:
    """The floor: the same DAG as Prefect tasks that do nothing, on the same Dask cluster and
    server, each submitted with its parents as upstream futures (as the node tasks are)."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.futures import wait
    from prefect_dask import DaskTaskRunner

    @task(persist_result=False, cache_policy=NO_CACHE)
    def noop(upstream: list) -> None:
        return None

    def snapshot() -> dict[str, float]:
        return {
            "flow": own_cpu(),
            "workers": cpu_of(watched["workers"]),
            "server": cpu_of(watched["server"], with_children=True),
            "machine": machine_busy_cpu(),
        }

    @flow(name="scaling-bench-bare", task_runner=DaskTaskRunner(address=scheduler_address))
    def bare() -> dict:
        cpu_before = snapshot()
        started = time.time()
        futures: dict[str, object] = {}
        for depth, layer in enumerate(layers):
            below = layers[depth - 1] if depth else []
            for index, name in enumerate(layer):
                parents = parents_of(index, below) if below else []
                futures[name] = noop.with_options(task_run_name=name).submit(upstream=[futures[p] for p in parents])
        wait(list(futures.values()))
        finished = time.time()
        cpu_after = snapshot()
        return {"wall_s": finished - started, "cpu_s": {k: cpu_after[k] - cpu_before[k] for k in cpu_before}}

    result = bare()
    n_nodes = sum(len(layer) for layer in layers)
    return {
        "wall_s": round(result["wall_s"], 2),
        "cpu_s": {k: round(v, 2) for k, v in result["cpu_s"].items()},
        "cpu_per_node_ms": {k: round(1000 * result["cpu_s"][k] / n_nodes, 1) for k in ("flow", "workers", "server")},
    }


# Plain dbt on the same project, in a fresh process with no Prefect: its CPU per node, as
# one build on one thread (dbt's own work on a node) and as one command per node on a
# parsed manifest (what a PER_NODE worker runs, before anything of dbt-prefect's).
PLAIN_DBT_CPU = r"""
import json, os, resource, statistics, sys, time
from dbt.cli.main import dbtRunner

project, profiles, names = sys.argv[1], sys.argv[2], sys.argv[3:]
paths = ["--project-dir", project, "--profiles-dir", profiles, "--quiet"]


def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build(manifest, *extra):
    started = cpu()
    result = dbtRunner(manifest=manifest).invoke(["build", "--threads", "1", *extra, *paths])
    assert result.success, result.exception
    return cpu() - started


manifest = dbtRunner().invoke(["parse", *paths]).result
build(manifest)  # the first build in the process pays dbt's one-time costs
whole = [build(manifest)]
one = [build(manifest, "--select", names[0]) for _ in range(3)]
per_command = [build(manifest, "--select", name) for name in names]
n = len(names)
print(json.dumps({
    "whole_build_cpu_s": round(min(whole), 3),
    "one_node_build_cpu_s": round(min(one), 3),
    # dbt's marginal CPU for a node inside one build: the whole build less its fixed part.
    "in_one_build_ms": round(1000 * (min(whole) - min(one)) / (n - 1), 1),
    "own_command_ms_median": round(1000 * statistics.median(per_command), 1),
}))
"""


def plain_dbt_cpu(project: Path, pg: dict[str, str], password: str, names: list[str]) -> dict:
    """dbt's own CPU per node on this project, with no Prefect (PLAIN_DBT_CPU)."""
    import subprocess

    profiles = bench.WORK / "plain-profiles"
    profiles.mkdir(exist_ok=True)
    # The same profile, the password from the environment instead of a Prefect block.
    (profiles / "profiles.yml").write_text(
        (project / "profiles.yml")
        .read_text()
        .replace("{{ prefect.blocks.secret.orchestrator-bench-pg-password }}", "{{ env_var('BENCH_PG_PASSWORD') }}")
    )
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_DBT_CPU, str(project), str(profiles), *names],
        env={**os.environ, "BENCH_PG_PASSWORD": password},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise SystemExit(f"plain dbt failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(build: dict, n_nodes: int, sleep: float) -> dict:
    results = build["results"]
    ran = [r for r in results if r.ran_to]
    wall = build["finished"] - build["started"]
    sql = [r.execution_time for r in ran]
    # Peak of simultaneous nodes in dbt: did W workers really sleep side by side?
    edges = sorted([(r.ran_from, 1) for r in ran] + [(r.ran_to, -1) for r in ran])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    cpu = build["cpu_s"]
    ours = cpu["flow"] + cpu["workers"] + cpu["server"] + cpu["postgres"]
    return {
        "wall_s": round(wall, 2),
        "nodes": len(results),
        "succeeded": sum(1 for r in results if r.status == "success"),
        # From run_build's start to the first node in dbt: planning (the flow's partial parse) and submission.
        "to_first_node_s": round(min(r.ran_from for r in ran) - build["started"], 2) if ran else None,
        # From the last node's end to run_build's return: waiting until the server has recorded everything.
        "after_last_node_s": round(build["finished"] - max(r.ran_to for r in ran), 2) if ran else None,
        "sql_s_median": round(statistics.median(sql), 3) if sql else None,
        "sql_s_min": round(min(sql), 3) if sql else None,
        "sql_s_max": round(max(sql), 3) if sql else None,
        "peak_parallel_nodes": peak,
        "workers_used": len({r.worker for r in ran}),
        "phases_s": {k: round(v, 2) for k, v in build["phases_s"].items()},
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_per_node_ms": {k: round(1000 * cpu[k] / n_nodes, 1) for k in ("flow", "workers", "server", "postgres")},
        "cpu_per_node_ms_total": round(1000 * ours / n_nodes, 1),
        # Everyone's busy CPU that is not ours (the machine is shared).
        "other_cpu_s": round(cpu["machine"] - ours, 2),
        "machine_busy_share": round(cpu["machine"] / (wall * (os.cpu_count() or 1)), 2),
    }


# -- report -----------------------------------------------------------------------------
def add_speedups(rows: list[dict]) -> None:
    base = next((row for row in rows if row["workers"] == 1), None)
    for row in rows:
        if base is None:
            continue
        row["speedup"] = round(base["warm"]["wall_s"] / row["warm"]["wall_s"], 2)
        row["ideal_speedup"] = round(base["ideal_wall_s"] / row["ideal_wall_s"], 2)
        row["efficiency"] = round(row["speedup"] / row["workers"], 2)
        row["share_of_ideal_speedup"] = round(row["speedup"] / row["ideal_speedup"], 2)
        row["meets_target"] = row["workers"] == 1 or row["share_of_ideal_speedup"] >= TARGET_SHARE_OF_IDEAL_SPEEDUP


def markdown(report: dict) -> str:
    nan = float("nan")
    lines = [
        f"PER_NODE scaling: {report['models']} table models × pg_sleep({report['sleep']}), layers "
        f"{[len(layer) for layer in report['layers']]}, {report['cores']} cores. Wall = run_build of the warm "
        "build (the cold one is the first on a fresh cluster); CPU per node in ms during the warm run_build; "
        "cores busy = the busy share of the machine's cores, everyone's; others' CPU = the busy CPU seconds "
        "that were not ours.",
        "",
        "| W | cold wall | wall | speedup | ideal speedup | efficiency | ideal wall | % of ideal wall "
        "| CPU/node flow | CPU/node workers | CPU/node server | CPU/node postgres | cores busy | others' CPU |",
        "| ---: " * 14 + "|",
    ]
    for row in report["rows"]:
        warm, cpu = row["warm"], row["warm"]["cpu_per_node_ms"]
        lines.append(
            f"| {row['workers']} | {row['cold']['wall_s']:.1f} s | {warm['wall_s']:.1f} s "
            f"| {row.get('speedup', nan):.2f}× | {row.get('ideal_speedup', nan):.2f}× "
            f"| {row.get('efficiency', nan):.0%} | {row['ideal_wall_s']:.1f} s "
            f"| {row['ideal_wall_s'] / warm['wall_s']:.0%} | {cpu['flow']:.0f} | {cpu['workers']:.0f} "
            f"| {cpu['server']:.0f} | {cpu['postgres']:.0f} | {warm['machine_busy_share']:.0%} "
            f"| {warm['other_cpu_s']:.1f} s |"
        )
    if any("bare" in row for row in report["rows"]):
        lines += [
            "",
            "The floor: the same DAG as Prefect tasks that do nothing, on the same cluster and server "
            "(a warm second run). CPU per node in ms; \"above\" is the node task's minus the bare task's, "
            "which holds dbt's own work on the node and dbt-prefect's.",
            "",
            "| W | bare wall | bare: flow | workers | server | above bare: flow | workers | server |",
            "| ---: " * 8 + "|",
        ]
        for row in report["rows"]:
            if "bare" not in row:
                continue
            bare, ours = row["bare"]["cpu_per_node_ms"], row["warm"]["cpu_per_node_ms"]
            lines.append(
                f"| {row['workers']} | {row['bare']['wall_s']:.1f} s | {bare['flow']:.0f} | {bare['workers']:.0f} "
                f"| {bare['server']:.0f} | {ours['flow'] - bare['flow']:+.0f} | {ours['workers'] - bare['workers']:+.0f} "
                f"| {ours['server'] - bare['server']:+.0f} |"
            )
    plain = report.get("plain_dbt")
    if plain:
        lines += [
            "",
            f"Plain dbt on the same project, no Prefect (one thread): CPU per node "
            f"{plain['in_one_build_ms']:.0f} ms inside one build (the whole build less a one-node build): "
            "dbt's own work on a node. (As one plain `dbt build --select` command per node on a parsed "
            f"manifest, the median is {plain['own_command_ms_median']:.0f} ms: dbt's set-up of each command, "
            "which the workers' warm dbt session mostly spares.) What the workers spend above the bare task, "
            "less dbt's own work on the node, is dbt-prefect's per node plus what one command per node "
            "still costs dbt.",
            "",
            "| W | workers above bare | less dbt's own work on the node |",
            "| ---: | ---: | ---: |",
        ]
        for row in report["rows"]:
            if "bare" not in row:
                continue
            above = row["warm"]["cpu_per_node_ms"]["workers"] - row["bare"]["cpu_per_node_ms"]["workers"]
            lines.append(f"| {row['workers']} | {above:+.0f} | {above - plain['in_one_build_ms']:+.0f} |")
    phases = list(PHASES.values())
    lines += [
        "",
        "Where the warm build's wall goes (s): before the first node is in dbt, nodes, after the last; "
        "the steps of run_build in the flow's process; the most nodes in dbt at once.",
        "",
        "| W | to 1st node | first to last node | after last | " + " | ".join(phases) + " | peak parallel |",
        "| ---: " * (5 + len(phases)) + "|",
    ]
    for row in report["rows"]:
        warm = row["warm"]
        span = warm["wall_s"] - warm["to_first_node_s"] - warm["after_last_node_s"]
        steps = " | ".join(f"{warm['phases_s'].get(p, nan):.1f}" for p in phases)
        lines.append(
            f"| {row['workers']} | {warm['to_first_node_s']:.1f} | {span:.1f} | {warm['after_last_node_s']:.1f} "
            f"| {steps} | {warm['peak_parallel_nodes']} |"
        )
    lines.append("")
    for row in report["rows"]:
        if row["workers"] == 1 or "share_of_ideal_speedup" not in row:
            continue
        verdict = "meets" if row["meets_target"] else "MISSES"
        lines.append(
            f"- W = {row['workers']}: speedup {row['speedup']:.2f}× of an ideal {row['ideal_speedup']:.2f}× "
            f"= {row['share_of_ideal_speedup']:.0%}: {verdict} the {TARGET_SHARE_OF_IDEAL_SPEEDUP:.0%} target"
        )
    if not any(row["workers"] == 1 for row in report["rows"]):
        lines.append("- no W = 1 run: no speedup to judge")
    # dbt's execution_time includes its own work around the query: the longest stretches when the CPU is saturated.
    slept = all(row["warm"]["sql_s_min"] >= report["sleep"] for row in report["rows"])
    longest = ", ".join(f"{row['warm']['sql_s_max']:.2f} s at W = {row['workers']}" for row in report["rows"])
    lines.append(f"- every node's SQL took at least the sleep: {'yes' if slept else 'NO'}; the longest: {longest}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--width", type=int, default=16, help="models per layer")
    parser.add_argument("--sleep", type=float, default=0.5, help="pg_sleep seconds per model")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="the orchestrator's concurrency (a Prefect concurrency limit); default none",
    )
    parser.add_argument(
        "--bare",
        action="store_true",
        help="also run the same DAG as no-op Prefect tasks on each cluster: the floor a node task is measured against",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="also measure plain dbt's CPU per node on the same project, with no Prefect (one thread)",
    )
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    parser.add_argument("--report", type=Path, help="only print the tables of a JSON report written by --out")
    args = parser.parse_args()
    if args.report:
        shutil.rmtree(bench.WORK, ignore_errors=True)
        print(markdown(json.loads(args.report.read_text())))
        return

    layers = plan_layers(args.models, args.width)
    report: dict = {
        "models": args.models,
        "width": args.width,
        "sleep": args.sleep,
        "concurrency": args.concurrency,
        "cores": os.cpu_count(),
        "layers": layers,
        "rows": [],
    }
    server = bench.start_prefect()
    try:
        password = secrets.token_urlsafe(16)
        pg = bench.start_postgres(password)
        project = bench.WORK / "scaling"
        write_sleep_project(project, layers, args.sleep)
        bench.write_profile(project, pg, password)
        parse_once(project)
        if args.plain:
            report["plain_dbt"] = plain_dbt_cpu(project, pg, password, [name for layer in layers for name in layer])
            print(json.dumps({"plain_dbt": report["plain_dbt"]}), flush=True)

        from distributed import Client, LocalCluster

        server_pids = [server.pid] if server is not None else []
        for workers in args.workers:
            with LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster:
                with Client(cluster.scheduler_address) as client:
                    worker_pids = list(client.run(os.getpid).values())
                watched = {
                    "workers": worker_pids,
                    "server": server_pids,
                    "postgres": [p for p in [postgres_pid()] if p],
                }
                row: dict = {"workers": workers, "ideal_wall_s": ideal_wall(layers, workers, args.sleep)}
                for label in ("cold", "warm"):
                    row[f"{label}_server_idle_wait_s"] = round(wait_until_idle(server_pids), 2)
                    build = measured_build(project, cluster.scheduler_address, watched, args.concurrency)
                    row[label] = summarise(build, args.models, args.sleep)
                if args.bare:
                    bare_build(layers, cluster.scheduler_address, watched)  # workers warm their task machinery
                    row["bare_server_idle_wait_s"] = round(wait_until_idle(server_pids), 2)
                    row["bare"] = bare_build(layers, cluster.scheduler_address, watched)
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
    finally:
        bench.stop_postgres()
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    add_speedups(report["rows"])
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    shutil.rmtree(bench.WORK, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
