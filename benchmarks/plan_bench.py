#!/usr/bin/env python3
"""Benchmark: how long ``PrefectDbtOrchestrator.plan()`` takes, against plain ``dbt parse``.

    python benchmarks/plan_bench.py [--sizes 1000 5000] [--repeats 3] [--out plan.json]

For each size N, the synthetic project of run_benchmark.py (generate_project.py) is
parsed once; every measured run then starts from that parse's target/ (the partial-parse
state a scheduled build finds). Each repetition runs, in fresh processes and alternating
the order:
  - plain: ``dbtRunner().invoke(["parse"])``, what any dbt command pays before it runs;
  - plan: ``PrefectDbtOrchestrator(settings=...).plan()`` (per wave, no cache), which
    parses the same way and then builds the waves.
Reported: the call's wall time (median and range), the whole process's, peak RSS, and
plan's ratios to plain. No Prefect server: plan() talks to none.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run_benchmark import Project, log  # noqa: E402

WORKER = r"""
import json, resource, sys, time
t_start = time.perf_counter()
variant, project, out = sys.argv[1], sys.argv[2], sys.argv[3]
from dbt.cli.main import dbtRunner
if variant == "plan":
    from dbt_prefect import PrefectDbtOrchestrator, PrefectDbtSettings
    orchestrator = PrefectDbtOrchestrator(settings=PrefectDbtSettings(project_dir=project, profiles_dir=project))
    t0 = time.perf_counter()
    built = orchestrator.plan()
    call = time.perf_counter() - t0
    detail = {"waves": len(built.waves), "nodes": built.node_count}
else:
    t0 = time.perf_counter()
    result = dbtRunner().invoke(["parse", "--project-dir", project, "--profiles-dir", project, "--quiet"])
    call = time.perf_counter() - t0
    assert result.success, result.exception
    detail = {"nodes": len(result.result.nodes)}
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
json.dump({"call_s": call, "process_s": time.perf_counter() - t_start, "peak_rss_kb": peak, **detail}, open(out, "w"))
"""


def run(project: Project, variant: str) -> dict:
    project.reset()
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", WORKER, variant, str(project.dir), out.name],
            env=project.env(""), capture_output=True, text=True,
        )
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"{variant} failed at N={project.n}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        record = json.loads(Path(out.name).read_text())
    record.update(variant=variant, n=project.n, wall_s=wall)
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="plan-bench-"))
    runs: list[dict] = []
    for n in args.sizes:
        project = Project(work, n, sys.executable)
        project.prepare()
        for rep in range(args.repeats):
            order = ["plain", "plan"] if rep % 2 == 0 else ["plan", "plain"]
            for variant in order:
                record = run(project, variant)
                runs.append(record)
                log(
                    f"N={n} rep={rep + 1}/{args.repeats} {variant}: call {record['call_s']:.2f} s, "
                    f"process {record['wall_s']:.2f} s, peak RSS {record['peak_rss_kb'] / 1024:.0f} MB"
                )
    lines = [
        "| models | plain `dbt parse` (s) | `plan()` (s) | ratio | process ratio | waves | peak RSS plain / plan (MB) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in args.sizes:
        by = {v: [r for r in runs if r["n"] == n and r["variant"] == v] for v in ("plain", "plan")}

        def med(variant: str, key: str) -> float:
            return statistics.median(r[key] for r in by[variant])

        def cell(variant: str) -> str:
            calls = [r["call_s"] for r in by[variant]]
            return f"{statistics.median(calls):.2f} ({min(calls):.2f}–{max(calls):.2f})"

        lines.append(
            f"| {n} | {cell('plain')} | {cell('plan')} | {med('plan', 'call_s') / med('plain', 'call_s'):.2f}× "
            f"| {med('plan', 'wall_s') / med('plain', 'wall_s'):.2f}× | {by['plan'][0]['waves']} "
            f"| {med('plain', 'peak_rss_kb') / 1024:.0f} / {med('plan', 'peak_rss_kb') / 1024:.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"runs": runs, "table": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
