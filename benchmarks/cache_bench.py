#!/usr/bin/env python3
"""Benchmark: a second, unchanged orchestrated build with caching, against the full build.

    python benchmarks/cache_bench.py [--sizes 200 1000] [--what runner orchestrator]
                                     [--repeats 5] [--out benchmarks/results/cache.json]

For each size N (benchmarks/generate_project.py: N models, N/3 tests, one seed, DuckDB),
against a Prefect server with default settings, each build in a fresh process inside a
flow, PrefectDbtOrchestrator(execution_mode=PER_NODE, cache=CacheConfig(...)) runs:
  1. the full build, with an empty cache store;
  2. the same build again, nothing changed: the cache answers;
once with the default CacheConfig (tests are not cached, as in the official defaults)
and once with tests cached too (exclude_resource_types without test). It prints the
wall time of each process and of run_build, and the ratio second/full.

The runner's way (--what runner): PrefectDbtRunner(state_store=...).invoke(["build"],
only_changed=True), the first build with an empty store, the second with nothing changed:
dbt's state selectors select nothing. Timed the same way, invoke in place of run_build.

The reference (--what plain): plain dbt in a fresh process with no Prefect, the second
build run with --state and --select state:modified+ result:error+ result:fail+.

The floor (--what bare): one bare Prefect task run per node of the project, a no-op task
called in a flow on the same server, twice: what a task run costs at the least, against
which a cached node's Cached task run is measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run_benchmark import PrefectServer, Project, log  # noqa: E402

# A build inside a flow: `setup` defines make() (inside the flow, not timed) and run(made),
# which builds and returns the status of every node.
IN_A_FLOW = r"""
import json, sys, time
t0 = time.perf_counter()
from prefect import flow
{setup}

@flow(name="dbt-cache-benchmark", persist_result=False)
def build():
    made = make()
    t1 = time.perf_counter()
    counts = {{}}
    for status in run(made):
        counts[status] = counts.get(status, 0) + 1
    return {{"run_build_s": time.perf_counter() - t1, "statuses": counts}}

out = build()
out["process_s"] = time.perf_counter() - t0
print(json.dumps(out))
"""

BUILD = IN_A_FLOW.format(
    setup="""
from dbt_prefect import CacheConfig, ExecutionMode, PrefectDbtOrchestrator, PrefectDbtSettings
project, store, tests_cached = sys.argv[1], sys.argv[2], sys.argv[3] == "yes"
config = CacheConfig(key_storage=store)
if tests_cached:
    config = CacheConfig(key_storage=store, exclude_resource_types=frozenset({"snapshot", "unit_test"}))

def make():
    return PrefectDbtOrchestrator(
        settings=PrefectDbtSettings(project_dir=project, profiles_dir=project),
        execution_mode=ExecutionMode.PER_NODE,
        cache=config,
        raise_on_failure=False,
    )

def run(orchestrator):
    return [r["status"] for r in orchestrator.run_build().values()]
"""
)

RUNNER_BUILD = IN_A_FLOW.format(
    setup="""
from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings
project, store = sys.argv[1], sys.argv[2]

def make():
    return PrefectDbtRunner(
        settings=PrefectDbtSettings(project_dir=project, profiles_dir=project),
        state_store=store,
        raise_on_failure=False,
    )

def run(runner):
    result = runner.invoke(["build", "--threads", "4"], only_changed=True)
    return [str(r.status) for r in (result.result.results if result.result is not None else [])]
"""
)

# The reference: plain dbt in a fresh process, no Prefect. The first build stores its
# artifacts; the second selects what changed with dbt's own state selectors.
PLAIN_BUILD = r"""
import json, shutil, sys, time
from pathlib import Path
t0 = time.perf_counter()
from dbt.cli.main import dbtRunner
project, store = Path(sys.argv[1]), Path(sys.argv[2])
args = ["build", "--threads", "4", "--project-dir", str(project), "--profiles-dir", str(project), "--quiet"]
if (store / "manifest.json").exists():
    args += ["--state", str(store), "--select", "state:modified+", "result:error+", "result:fail+"]
t1 = time.perf_counter()
result = dbtRunner().invoke(args)
elapsed = time.perf_counter() - t1
store.mkdir(parents=True, exist_ok=True)
for name in ("manifest.json", "run_results.json"):
    shutil.copy(project / "target" / name, store / name)
counts = {}
for r in result.result.results:
    counts[str(r.status)] = counts.get(str(r.status), 0) + 1
print(json.dumps({"run_build_s": elapsed, "statuses": counts, "process_s": time.perf_counter() - t0}))
"""

# The floor for a cached node (--what bare): one bare Prefect task run per node of the
# project (a no-op task called in the flow), on the same server, in a fresh process.
BARE_TASKS = IN_A_FLOW.format(
    setup="""
from pathlib import Path
from prefect import task
from prefect.cache_policies import NO_CACHE
nodes = json.loads((Path(sys.argv[1]) / "expected.json").read_text())["nodes"]

@task(persist_result=False, cache_policy=NO_CACHE)
def noop():
    return "completed"

def make():
    return nodes

def run(count):
    return [noop.with_options(task_run_name=f"node {i}")() for i in range(count)]
"""
)

# The same floor, held to the orchestrator's promise (--what bare): the call returns once
# the API reads every one of its task runs in a terminal state (polled, with a bound).
BARE_TASKS_READ_BACK = BARE_TASKS.replace(
    """def run(count):
    return [noop.with_options(task_run_name=f"node {i}")() for i in range(count)]""",
    """def run(count):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterStateType
    from prefect.context import FlowRunContext
    from prefect.client.schemas.objects import StateType

    statuses = [noop.with_options(task_run_name=f"node {i}")() for i in range(count)]
    flow_runs = FlowRunFilter(id=FlowRunFilterId(any_=[FlowRunContext.get().flow_run.id]))
    done = TaskRunFilter(state={"type": TaskRunFilterStateType(any_=[StateType.COMPLETED])})
    deadline = time.monotonic() + 120
    with get_client(sync_client=True) as client:
        while True:
            seen, offset = 0, 0
            while True:
                page = client.read_task_runs(flow_run_filter=flow_runs, task_run_filter=done, limit=200, offset=offset)
                seen, offset = seen + len(page), offset + 200
                if len(page) < 200:
                    break
            if seen >= count or time.monotonic() > deadline:
                break
            time.sleep(0.5)  # polling harder would load the server that is storing them
    if seen < count:
        raise SystemExit(f"only {seen} of {count} task runs readable after 120 s")
    return statuses""",
)

# (label, script, extra argument): what --what chooses from.
CONFIGS = {
    "orchestrator": [
        ("orchestrator, default CacheConfig", BUILD, "no"),
        ("orchestrator, tests cached too", BUILD, "yes"),
    ],
    "runner": [("runner, only_changed=True", RUNNER_BUILD, "-")],
    "plain": [("plain dbt, --select state:modified+ ...", PLAIN_BUILD, "-")],
    "bare": [
        ("bare Prefect task runs, one per node", BARE_TASKS, "-"),
        ("bare Prefect task runs, one per node, read back", BARE_TASKS_READ_BACK, "-"),
    ],
}


def run_build(project: Project, server: PrefectServer, store: Path, script: str, extra: str) -> dict:
    server.wait_idle()
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script, str(project.dir), str(store), extra],
        env=project.env(server.api_url),
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"the build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    record["wall_s"] = wall
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--what", nargs="+", choices=sorted(CONFIGS), default=["plain", "runner", "orchestrator"])
    parser.add_argument(
        "--repeats", type=int, default=1, help="unchanged builds per configuration (median and range), alternating"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "cache.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dbt-prefect-cache-bench-"))
    server = PrefectServer(work, sys.executable, default_settings=True)
    server.start()
    rows = []
    try:
        for n in args.sizes:
            project = Project(work, n, sys.executable)
            project.prepare()
            configs = [c for what in args.what for c in CONFIGS[what]]
            stores: dict[int, Path] = {}
            fulls: dict[int, dict] = {}
            for index, (_, script, extra) in enumerate(configs):
                project.reset()
                stores[index] = work / f"cache-n{n}-{index}"
                fulls[index] = run_build(project, server, stores[index], script, extra)
            # The unchanged builds, alternating the order of the configurations each round.
            seconds: dict[int, list[dict]] = {index: [] for index in range(len(configs))}
            for round_number in range(args.repeats):
                order = list(range(len(configs)))
                for index in order if round_number % 2 == 0 else reversed(order):
                    _, script, extra = configs[index]
                    seconds[index].append(run_build(project, server, stores[index], script, extra))
            for index, (label, _, _) in enumerate(configs):
                full = fulls[index]
                runs = sorted(seconds[index], key=lambda run: run["run_build_s"])
                second = runs[(len(runs) - 1) // 2]  # the median run (the lower one of an even count)
                row = {
                    "models": n,
                    "nodes": project.expected["nodes"],
                    "config": label,
                    "full": full,
                    "second": second,
                    "second_run_build_s": [run["run_build_s"] for run in seconds[index]],
                    "ratio_wall": second["wall_s"] / full["wall_s"],
                    "ratio_run_build": second["run_build_s"] / full["run_build_s"],
                }
                rows.append(row)
                log(
                    f"N={n} {row['config']}: full {full['wall_s']:.1f} s (run_build {full['run_build_s']:.1f} s), "
                    f"second {second['wall_s']:.1f} s (run_build {second['run_build_s']:.1f} s, "
                    f"{runs[0]['run_build_s']:.2f}-{runs[-1]['run_build_s']:.2f} s over {len(runs)}) {second['statuses']}: "
                    f"{row['ratio_wall']:.0%} of the full build's wall time, {row['ratio_run_build']:.0%} of its run_build"
                )
    finally:
        server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    print(
        "| models | nodes | how | full build | unchanged build | unchanged run_build or invoke: median (range) "
        "| ratio (process) | ratio (run_build or invoke) |"
    )
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['models']} | {r['nodes']} | {r['config']} | {r['full']['wall_s']:.1f} s | {r['second']['wall_s']:.1f} s "
            f"| {r['second']['run_build_s']:.2f} s ({min(r['second_run_build_s']):.2f}–{max(r['second_run_build_s']):.2f}) "
            f"| {r['ratio_wall']:.0%} | {r['ratio_run_build']:.0%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
