#!/usr/bin/env python3
"""How much wall time plain dbt loses to CPU used by another process on the same machine.

    python benchmarks/contention_probe.py [--models 200] [--threads 1 4] [--duty 0 0.3 0.6 1.0] [--repeats 2]

dbt-prefect's benchmark runs the Prefect server on the same machine as dbt, as a laptop or
a small VM would. This probe measures what that sharing costs dbt by itself, with no
Prefect at all: plain `dbtRunner().invoke(["build"])` on the benchmark's synthetic project,
once alone and once next to a "burner" process that keeps one core busy for a given share
of the time (its duty cycle, in 10 ms slices). It prints, per threads and duty: the median
wall of the build, the CPU seconds the burner used meanwhile, and the wall seconds dbt lost
per CPU second the burner used. Multiply that rate by the server CPU that run_benchmark.py
reports to see how much of dbt-prefect's overhead is the server sharing the cores.

Uses only this environment (dbt-core, dbt-duckdb) and the standard library.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generate_project import generate  # noqa: E402

QUIET = {"DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
BUILD = (
    "import sys, time\n"
    "from dbt.cli.main import dbtRunner\n"
    "p, threads = sys.argv[1], sys.argv[2]\n"
    "t0 = time.perf_counter()\n"
    "r = dbtRunner().invoke(['build', '--threads', threads, '--project-dir', p, '--profiles-dir', p, '--quiet'])\n"
    "print(time.perf_counter() - t0)\n"
    "sys.exit(0 if r.success else 1)\n"
)


def burn(duty: float, stop: multiprocessing.synchronize.Event) -> None:
    """Keep one core busy `duty` of the time, in 10 ms slices, until stopped."""
    busy, idle = 0.01 * duty, 0.01 * (1 - duty)
    while not stop.is_set():
        end = time.perf_counter() + busy
        while time.perf_counter() < end:
            pass
        if idle:
            time.sleep(idle)


def one_build(project: Path, db: Path, threads: int, duty: float) -> tuple[float, float]:
    """(dbt's invoke wall, CPU seconds the burner used meanwhile)."""
    for path in db.parent.glob(db.name + "*"):
        path.unlink()
    env = {**os.environ, **QUIET, "BENCH_DUCKDB_PATH": str(db)}
    stop = multiprocessing.Event()
    burner = multiprocessing.Process(target=burn, args=(duty, stop), daemon=True) if duty > 0 else None
    if burner is not None:
        burner.start()
        time.sleep(0.2)
    ticks_before = _cpu_ticks(burner.pid) if burner is not None else 0
    done = subprocess.run([sys.executable, "-c", BUILD, str(project), str(threads)], env=env, capture_output=True, text=True)
    burned = (_cpu_ticks(burner.pid) - ticks_before) / os.sysconf("SC_CLK_TCK") if burner is not None else 0.0
    if burner is not None:
        stop.set()
        burner.join()
    if done.returncode != 0:
        raise SystemExit(f"dbt build failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1]), burned


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--duty", type=float, nargs="+", default=[0.0, 0.3, 0.6, 1.0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dbt-prefect-contention-"))
    project, db = work / "project", work / "bench.duckdb"
    generate(args.models, project)
    parse = subprocess.run(
        [sys.executable, "-c", BUILD.replace("'build', '--threads', threads, ", "'parse', "), str(project), "1"],
        env={**os.environ, **QUIET, "BENCH_DUCKDB_PATH": str(db)}, capture_output=True, text=True,
    )
    if parse.returncode != 0:
        raise SystemExit(parse.stdout + parse.stderr)
    rows = []
    print(f"{os.cpu_count()} CPUs; N={args.models}; load average {os.getloadavg()[0]:.2f}")
    print("threads | burner duty | dbt wall (median) | burner CPU | wall lost per burner CPU-second")
    for threads in args.threads:
        baseline = None
        for duty in args.duty:
            runs = [one_build(project, db, threads, duty) for _ in range(args.repeats)]
            wall = statistics.median(w for w, _ in runs)
            burned = statistics.median(b for _, b in runs)
            if duty == 0:
                baseline = wall
            rate = (wall - baseline) / burned if baseline is not None and burned > 0 else None
            rows.append({"threads": threads, "duty": duty, "wall_s": wall, "burner_cpu_s": burned, "lost_per_cpu_s": rate})
            print(f"{threads} | {duty:.1f} | {wall:.2f} s | {burned:.2f} s | {'-' if rate is None else f'{rate:.2f} s'}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
