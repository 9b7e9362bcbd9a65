#!/usr/bin/env python3
"""Where dbt-prefect's overhead goes: the second invoke in one process, by configuration.

    python benchmarks/breakdown.py [--models 200] [--threads 4] [--repeats 2] [--out DIR]

On the benchmark's synthetic DuckDB project, against one `prefect server` with its
default settings, each configuration runs in a fresh process that builds the project
twice (the first build warms imports, dbt's caches and the flow) and reports the wall
time of the second `invoke`. Configurations:

- plain dbt, and dbt-prefect as users run it;
- plain dbt with the freeze of long-lived objects dbt-prefect applies (runner/heap.py),
  which spares dbt's garbage collector: dbt-prefect against it is its own overhead;
- dbt-prefect with `PREFECT_LOGGING_LEVEL=WARNING` (dbt's info lines not logged at all);
- dbt-prefect with `PREFECT_LOGGING_TO_API_ENABLED=false` (lines printed, not shipped);
- dbt-prefect with `disable_assets=True` (no asset events);
- plain and dbt-prefect pinned to one core with the server pinned to the other, with and
  without API logging: what the Prefect server's CPU costs when it cannot borrow dbt's core.

Prints a markdown table (median of the repeats) and writes it, with the raw rows, to
DIR/breakdown.md and DIR/breakdown.json. Timings never fail the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CONFIGS: list[tuple[str, str, dict[str, str], dict, bool]] = [
    # (label, variant, extra env, runner kwargs, pinned)
    ("plain dbt", "plain", {}, {}, False),
    # What dbt-prefect's freeze of long-lived objects (runner/heap.py) saves dbt itself.
    ("plain dbt, long-lived objects frozen as dbt-prefect does", "plain-frozen", {}, {}, False),
    ("dbt-prefect", "prefect", {}, {}, False),
    ("dbt-prefect, PREFECT_LOGGING_LEVEL=WARNING", "prefect", {"PREFECT_LOGGING_LEVEL": "WARNING"}, {}, False),
    ("dbt-prefect, logging to the API off", "prefect", {"PREFECT_LOGGING_TO_API_ENABLED": "false"}, {}, False),
    ("dbt-prefect, disable_assets=True", "prefect", {}, {"disable_assets": True}, False),
    ("plain dbt, pinned (server on the other core)", "plain", {}, {}, True),
    ("dbt-prefect, pinned (server on the other core)", "prefect", {}, {}, True),
    ("dbt-prefect, pinned, logging to the API off", "prefect", {"PREFECT_LOGGING_TO_API_ENABLED": "false"}, {}, True),
]


def worker(project: Path, threads: int, variant: str, runner_kwargs: dict, out: Path) -> None:
    """Two builds in this process; the second one's invoke wall time goes to ``out``."""
    from dbt.cli.main import dbtRunner

    args = ["build", "--threads", str(threads), "--project-dir", str(project), "--profiles-dir", str(project)]
    walls: list[float] = []
    if variant.startswith("plain"):
        from contextlib import ExitStack

        from dbt_prefect._compat.dbt_plugin import capture_manifest
        from dbt_prefect.runner.heap import freeze_what_exists_now, long_lived_objects_frozen

        for _ in range(2):
            t0 = time.perf_counter()
            with ExitStack() as stack:
                if variant == "plain-frozen":
                    stack.enter_context(long_lived_objects_frozen())
                    stack.enter_context(capture_manifest(on_parsed=freeze_what_exists_now))
                result = dbtRunner().invoke(args)
            walls.append(time.perf_counter() - t0)
            assert result.success, result.exception
    else:
        from prefect import flow

        from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings

        @flow(name="dbt-breakdown", persist_result=False)
        def two_builds() -> None:
            runner = PrefectDbtRunner(
                settings=PrefectDbtSettings(project_dir=project, profiles_dir=project),
                raise_on_failure=False,
                **runner_kwargs,
            )
            for _ in range(2):
                t0 = time.perf_counter()
                result = runner.invoke(["build", "--threads", str(threads)])
                walls.append(time.perf_counter() - t0)
                assert result.success, result.exception

        two_builds()
    out.write_text(json.dumps({"first_s": walls[0], "second_s": walls[1]}))


def pin(pid: int, cpus: str) -> None:
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmark-out"))
    parser.add_argument("--worker", nargs=4, metavar=("PROJECT", "VARIANT", "RUNNER_KWARGS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        project, variant, kwargs, out = args.worker
        worker(Path(project), args.threads, variant, json.loads(kwargs), Path(out))
        return 0

    import run_benchmark as bench

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dbt-prefect-breakdown-"))
    server = bench.PrefectServer(work, sys.executable, default_settings=True)
    server.start()
    project = bench.Project(work, args.models, sys.executable)
    project.prepare()
    rows: list[dict] = []
    try:
        for rep in range(args.repeats):
            # Alternate the order, so that drift on the machine hits every configuration alike.
            order = CONFIGS if rep % 2 == 0 else list(reversed(CONFIGS))
            for label, variant, extra_env, runner_kwargs, pinned in order:
                project.reset()
                server.wait_idle()
                env = project.env(server.api_url)
                env.update(extra_env)
                result_path = work / "result.json"
                result_path.unlink(missing_ok=True)
                cmd = [sys.executable, __file__, "--threads", str(args.threads), "--worker",
                       str(project.dir), variant, json.dumps(runner_kwargs), str(result_path)]
                if pinned:
                    # Every thread of the server (-a): affinity is per thread on Linux.
                    pin(server.process.pid, "1")
                    cmd = ["taskset", "-c", "0", *cmd]
                try:
                    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
                finally:
                    if pinned:
                        pin(server.process.pid, f"0-{(os.cpu_count() or 1) - 1}")
                if done.returncode != 0 or not result_path.exists():
                    bench.log(f"{label}: failed\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
                    continue
                row = {"label": label, "rep": rep, **json.loads(result_path.read_text())}
                rows.append(row)
                bench.log(f"{label}: second invoke {row['second_s']:.2f} s (first {row['first_s']:.2f} s)")
    finally:
        server.stop()
    lines = [
        f"Second `invoke` in one process, N={args.models} ({project.expected['nodes']} nodes), threads "
        f"{args.threads}, Prefect server with default settings, median of {args.repeats}.",
        "",
        "| configuration | second invoke | against plain dbt (same pinning) | against plain dbt, frozen |",
        "| --- | ---: | ---: | ---: |",
    ]
    medians = {
        label: statistics.median(r["second_s"] for r in rows if r["label"] == label)
        for label, *_ in CONFIGS
        if any(r["label"] == label for r in rows)
    }
    for label, _variant, _env, _kwargs, pinned in CONFIGS:
        if label not in medians:
            continue
        base = medians.get("plain dbt, pinned (server on the other core)" if pinned else "plain dbt")
        frozen = medians.get("plain dbt, long-lived objects frozen as dbt-prefect does")
        ratio = f"{medians[label] / base:.2f}×" if base else "–"
        against_frozen = f"{medians[label] / frozen:.2f}×" if frozen and not pinned else "–"
        lines.append(f"| {label} | {medians[label]:.2f} s | {ratio} | {against_frozen} |")
    text = "\n".join(lines) + "\n"
    print(text)
    (args.out / "breakdown.md").write_text(text)
    (args.out / "breakdown.json").write_text(json.dumps({"rows": rows, "medians": medians}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
