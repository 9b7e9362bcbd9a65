#!/usr/bin/env python3
"""Benchmark dbt-prefect against plain dbt (and, optionally, the official prefect-dbt).

    python benchmarks/run_benchmark.py --smoke
    python benchmarks/run_benchmark.py --sizes 200 1000 --threads 1 4 --repeats 3
    python benchmarks/run_benchmark.py --plan 200:1,4:3 1000:1,4:3 5000:4:1 \\
        --official-python /tmp/official-venv/bin/python --official-plan 200:1,4:3 1000:4:1

What one benchmark run does:
1. Generates one synthetic project per size N (generate_project.py) and runs `dbt parse`
   once in it. The resulting target/ (manifest.json, partial_parse.msgpack) is saved and
   restored before every measured run, so every run of every variant starts from the same
   partial-parse state: a partial parse that finds nothing changed. The DuckDB file and
   logs/ are deleted before every run.
2. Starts one real `prefect server` (own PREFECT_HOME and SQLite database in the work
   directory, UI off) and waits for /api/health.
3. For each (N, threads) and each repetition, runs every variant in a fresh process
   (bench_worker.py), alternating the order (A B C, then C B A, ...) so that load from
   elsewhere on the machine hits all variants alike. Before each run it waits until the
   server has been idle for a moment, and it records /proc/loadavg.
4. Writes out/results.jsonl (one line per run, appended as runs finish), out/results.json
   (runs + summary + machine), out/results.md (the tables) and out/overhead.png (ratio and
   per-node overhead against N; skipped with a message when matplotlib is missing).

Variants: `plain` (dbtRunner), `prefect` (dbt_prefect.PrefectDbtRunner in a flow, assets
on), `prefect-metadata` (the same on a copy of the project that installs the dbt_prefect
package and runs its collect_metadata() post-hook on every seed and model, so each asset
carries its row count and columns; with --metadata; its ratio is against plain dbt on the
project without hooks), `official` (prefect_dbt's runner, run with --official-python from
a separate environment; off unless given).

Exit status: 1 if a plain or dbt_prefect run broke (dbt failed, the worker crashed, or the
task runs / asset events were not all readable when invoke returned, which dbt_prefect
promises); timings never fail the run. Official-runner problems are reported, not fatal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from generate_project import generate  # noqa: E402

QUIET_ENV = {
    "DO_NOT_TRACK": "1",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
VARIANT_ORDER = ["plain", "prefect", "per-wave", "prefect-metadata", "official"]
# Variants whose breakage fails the benchmark run (exit status 1).
OWN_VARIANTS = {"plain", "prefect", "per-wave", "prefect-metadata"}

TARGETS_TEXT = {
    "ratio_200_t4": "ratio <= 1.10 at N=200, threads=4",
    "ratio_1000": "ratio <= 1.05 at N=1000, threads=4",
    "rss": "peak RSS <= 1.3x plain dbt's",
    "fixed_cost": "first invoke: (invoke -> first node) + (dbt done -> invoke returns) <= plain dbt's + 0.5 s",
    "readback": "every task run terminal, every asset event delivered, when invoke returns",
    "per_wave_200": "per wave: ratio <= 1.3 at N=200, threads=4",
}


# -- helpers -----------------------------------------------------------------------------
def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def parse_plan(entries: list[str]) -> list[tuple[int, list[int], int]]:
    """ "N:T1,T2:R" -> (N, [T1, T2], R)."""
    plan = []
    for entry in entries:
        try:
            n, threads, repeats = entry.split(":")
            plan.append((int(n), [int(t) for t in threads.split(",")], int(repeats)))
        except ValueError:
            raise SystemExit(f"--plan entries look like 200:1,4:3 (N:threads:repeats), not {entry!r}")
    return plan


def base_env() -> dict[str, str]:
    # Nothing Prefect or dbt from the calling shell leaks into the measured processes.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DBT_"))}
    env.update(QUIET_ENV)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def machine_info() -> dict:
    info: dict = {"platform": platform.platform(), "nproc": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "python"], capture_output=True, text=True
        )
        info["git_commit"] = commit.stdout.strip()
        info["package_uncommitted_changes"] = bool(dirty.stdout.strip())
    except OSError:
        pass
    return info


# -- the Prefect server ----------------------------------------------------------------
class PrefectServer:
    def __init__(self, work: Path, python: str, default_settings: bool = False) -> None:
        # default_settings: the server as users run it, with its 5 s event flush interval.
        self.default_settings = default_settings
        self.home = work / "prefect-server"
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.python = python
        self.process: subprocess.Popen | None = None
        self.log_path = self.home / "server.log"

    def start(self, timeout: float = 180) -> None:
        env = base_env()
        env.update(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.home / 'prefect.db'}",
                "PREFECT_SERVER_UI_ENABLED": "false",
            }
        )
        if not self.default_settings:
            # The setting the README recommends: invoke() waits until its asset events
            # are stored, and the server writes events in batches (every 5 s by default).
            env["PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL"] = "0.5"
        t0 = time.perf_counter()
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                [self.python, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the Prefect server did not start; its log:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        log(f"prefect server healthy at {self.api_url} after {time.perf_counter() - t0:.1f} s")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def _cpu_ticks(self) -> int:
        """CPU ticks of the server and its child processes."""
        if self.process is None:
            return 0
        root = self.process.pid
        children: dict[int, list[int]] = {}
        ticks: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue
            pid = int(stat.parent.name)
            fields = text.rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(pid)
            ticks[pid] = int(fields[11]) + int(fields[12])
        total, pending = 0, [root]
        while pending:
            pid = pending.pop()
            total += ticks.get(pid, 0)
            pending.extend(children.get(pid, []))
        return total

    def wait_idle(self, max_wait: float = 30.0, window: float = 0.5, threshold: float = 0.10) -> float:
        """Wait until the server uses under `threshold` of a core over `window` seconds."""
        hz = os.sysconf("SC_CLK_TCK")
        t0 = time.monotonic()
        while time.monotonic() - t0 < max_wait:
            before = self._cpu_ticks()
            time.sleep(window)
            if (self._cpu_ticks() - before) / hz / window < threshold:
                break
        return time.monotonic() - t0

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)  # the session this script started
            self.process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# -- projects ----------------------------------------------------------------------------
class Project:
    def __init__(self, work: Path, n: int, python: str, metadata: bool = False) -> None:
        self.n = n
        self.metadata = metadata
        name = f"n{n}-metadata" if metadata else f"n{n}"
        self.dir = work / "projects" / name
        self.snapshot = work / "projects" / f"{name}.target"
        self.db = work / "db" / f"{name}.duckdb"
        self.python = python
        self.expected: dict = {}

    def prepare(self) -> None:
        t0 = time.perf_counter()
        self.expected = generate(self.n, self.dir, metadata_package=REPO if self.metadata else None)
        self.db.parent.mkdir(parents=True, exist_ok=True)
        code = (
            "import sys\n"
            "from dbt.cli.main import dbtRunner\n"
            "p = sys.argv[1]\n"
            "common = ['--project-dir', p, '--profiles-dir', p, '--quiet']\n"
            "if sys.argv[2] == 'deps' and not dbtRunner().invoke(['deps', *common]).success:\n"
            "    sys.exit(1)\n"
            "r = dbtRunner().invoke(['parse', *common])\n"
            "sys.exit(0 if r.success else 1)\n"
        )
        done = subprocess.run(
            [self.python, "-c", code, str(self.dir), "deps" if self.metadata else "-"],
            env=self.env(""), capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"dbt parse failed for N={self.n}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        if self.snapshot.exists():
            shutil.rmtree(self.snapshot)
        shutil.copytree(self.dir / "target", self.snapshot)
        log(
            f"project N={self.n}: {self.expected['nodes']} nodes ({self.expected['models']} models, "
            f"{self.expected['tests']} tests, {self.expected['seeds']} seeds), parsed in {time.perf_counter() - t0:.1f} s"
        )

    def env(self, api_url: str) -> dict[str, str]:
        env = base_env()
        env["BENCH_DUCKDB_PATH"] = str(self.db)
        if api_url:
            env["PREFECT_API_URL"] = api_url
            env["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"
        return env

    def reset(self) -> None:
        """The state every run starts from: parsed target/, no logs, no database."""
        for path in (self.dir / "target", self.dir / "logs"):
            shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(self.snapshot, self.dir / "target")
        for path in self.db.parent.glob(self.db.name + "*"):
            path.unlink()


# -- running -----------------------------------------------------------------------------
def run_one(args, project: Project, server: PrefectServer, variant: str, threads: int, rep: int, order: int) -> dict:
    python = args.official_python if variant == "official" else sys.executable
    worker_variant = "prefect" if variant == "prefect-metadata" else variant
    project.reset()
    idle_wait = server.wait_idle() if server is not None else 0.0
    runs_dir = args.out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    stem = f"n{project.n}-t{threads}-r{rep}-{variant}"
    result_path = runs_dir / f"{stem}.json"
    log_path = runs_dir / f"{stem}.log"
    result_path.unlink(missing_ok=True)
    cmd = [
        python, str(HERE / "bench_worker.py"),
        "--variant", worker_variant,
        "--project", str(project.dir),
        "--threads", str(threads),
        "--out", str(result_path),
    ]
    load_before = loadavg()
    hz = os.sysconf("SC_CLK_TCK")
    server_ticks = server._cpu_ticks() if server is not None else 0
    t0 = time.perf_counter()
    timed_out = False
    with open(log_path, "wb") as log_file:
        try:
            proc = subprocess.run(
                cmd, env=project.env(server.api_url if server else ""), stdout=log_file,
                stderr=subprocess.STDOUT, timeout=args.run_timeout,
            )
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            timed_out, returncode = True, -1
    wall = time.perf_counter() - t0
    server_cpu = None
    if server is not None:
        # The server's CPU for this run, including the backlog it works off afterwards.
        server.wait_idle()
        server_cpu = (server._cpu_ticks() - server_ticks) / hz
    record: dict = {}
    if result_path.exists():
        try:
            record = json.loads(result_path.read_text())
        except json.JSONDecodeError:
            record = {}
    record.update(
        {
            "variant": variant,
            "n": project.n,
            "threads": threads,
            "rep": rep,
            "order": order,
            "process_wall_s": wall,
            "returncode": returncode,
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            "server_idle_wait_s": idle_wait,
            "server_cpu_s": server_cpu,
            "expected": project.expected,
            "log": str(log_path),
        }
    )
    if timed_out:
        record["ok"] = False
        record["error"] = f"timed out after {args.run_timeout} s"
    record.setdefault("ok", False)
    if not record["ok"] and "error" not in record:
        record["error"] = f"worker exited {returncode} without a result; see {log_path}"
    if server is not None and record["ok"] and record.get("readback") and record.get("flow_run_id"):
        # invoke returns once its asset events are delivered; the server stores them in
        # batches (every 5 s by default). Count them here, outside the timed process.
        record["readback"].update(delivered_assets(server.api_url, record["flow_run_id"], project.expected))
    record["readback_complete"] = readback_complete(record)
    if record["ok"] and not args.keep_logs:
        log_path.unlink(missing_ok=True)
        record["log"] = None
    return record


def delivered_assets(api_url: str, flow_run_id: str, expected: dict, timeout: float = 20.0) -> dict:
    """How many materializations of the run the server stores, polled until all are there
    or ``timeout`` seconds passed, and how long that took after the worker exited."""
    body = {
        "filter": {
            "event": {"name": ["prefect.asset.materialization.succeeded"]},
            "related": {"id": [f"prefect.flow-run.{flow_run_id}"]},
        },
        "limit": 1,
    }
    t0 = time.monotonic()
    count = 0
    while True:
        try:
            request = urllib.request.Request(
                f"{api_url}/events/filter", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                count = int(json.loads(response.read())["total"])
        except OSError:
            pass
        if count >= expected.get("asset_materializations", 0) or time.monotonic() - t0 > timeout:
            break
        time.sleep(0.25)
    return {"asset_materializations_delivered": count, "assets_stored_after_s": round(time.monotonic() - t0, 2)}


def readback_complete(record: dict) -> bool | None:
    readback = record.get("readback")
    if record["variant"] == "plain" or not record.get("ok"):
        return None
    if not readback:
        return False
    expected = record["expected"]
    # Task runs are readable when invoke returns; asset events are delivered then, and
    # stored by the server within its flush interval.
    assets = max(readback.get("asset_materializations_succeeded", 0), readback.get("asset_materializations_delivered", 0))
    return readback.get("task_runs_terminal", 0) >= expected["task_runs"] and assets >= expected["asset_materializations"]


def describe(record: dict) -> str:
    if not record["ok"]:
        return f"FAILED: {record.get('error', '')[:300]}"
    text = f"invoke {record['invoke_s']:.2f} s, process {record['process_wall_s']:.2f} s, rss {record['peak_rss_kb'] / 1024:.0f} MB"
    if record.get("first_node_s") is not None:
        text += f", first node {record['first_node_s']:.2f} s"
    readback = record.get("readback")
    if readback:
        exp = record["expected"]
        text += (
            f", readback task runs {readback['task_runs_terminal']}/{exp['task_runs']}"
            f" assets {readback['asset_materializations_succeeded']}/{exp['asset_materializations']}"
        )
    parse = record.get("parse_events") or {}
    if "UnableToPartialParse" in parse:
        text += " [full re-parse!]"
    return text + f", load {record['loadavg_before'][:1]}"


# -- summary -----------------------------------------------------------------------------
def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(runs: list[dict]) -> list[dict]:
    cells: dict[tuple, dict[str, list[dict]]] = {}
    for run in runs:
        cells.setdefault((run["n"], run["threads"]), {}).setdefault(run["variant"], []).append(run)
    rows = []
    for (n, threads), variants in sorted(cells.items()):
        base = summary_of([r for r in variants.get("plain", []) if r["ok"]])
        for variant in VARIANT_ORDER:
            if variant not in variants:
                continue
            all_runs = variants[variant]
            s = summary_of([r for r in all_runs if r["ok"]])
            row = {"n": n, "threads": threads, "variant": variant, "runs": len(all_runs), **s}
            row["failed_runs"] = sum(1 for r in all_runs if not r["ok"])
            if base.get("invoke_s") and s.get("invoke_s"):
                nodes = s.get("executed_nodes") or 1
                row["ratio"] = s["invoke_s"] / base["invoke_s"]
                row["process_ratio"] = s["process_wall_s"] / base["process_wall_s"]
                row["overhead_ms_per_node"] = (s["invoke_s"] - base["invoke_s"]) / nodes * 1000
                row["rss_ratio"] = s["peak_rss_mb"] / base["peak_rss_mb"]
                if s.get("first_node_s") is not None and base.get("first_node_s") is not None:
                    row["first_node_delta_s"] = s["first_node_s"] - base["first_node_s"]
            rows.append(row)
    return rows


def summary_of(runs: list[dict]) -> dict:
    if not runs:
        return {}
    out = {
        "ok_runs": len(runs),
        "invoke_s": median(r["invoke_s"] for r in runs),
        "invoke_min_s": min(r["invoke_s"] for r in runs),
        "invoke_max_s": max(r["invoke_s"] for r in runs),
        "process_wall_s": median(r["process_wall_s"] for r in runs),
        "first_node_s": median(r.get("first_node_s") for r in runs),
        "after_dbt_s": median(r.get("after_dbt_s") for r in runs),
        "peak_rss_mb": median(r["peak_rss_kb"] / 1024 for r in runs),
        "executed_nodes": max(r.get("executed_nodes", 0) for r in runs),
        "expected_nodes": runs[0]["expected"]["nodes"],
        "loadavg_1m": median(r["loadavg_before"][0] for r in runs if r.get("loadavg_before")),
        "server_cpu_s": median(r.get("server_cpu_s") for r in runs),
        "full_reparse_runs": sum(1 for r in runs if "UnableToPartialParse" in (r.get("parse_events") or {})),
    }
    readbacks = [r.get("readback") for r in runs if r.get("readback")]
    if readbacks:
        exp = runs[0]["expected"]
        out["task_runs_readable_min"] = min(rb["task_runs_terminal"] for rb in readbacks)
        out["task_runs_expected"] = exp["task_runs"]
        # Delivered when invoke returns; the server stores them within its flush interval.
        out["asset_events_readable_min"] = min(
            max(rb["asset_materializations_succeeded"], rb.get("asset_materializations_delivered", 0)) for rb in readbacks
        )
        out["asset_events_expected"] = exp["asset_materializations"]
        out["asset_references_readable_min"] = min(rb["asset_references"] for rb in readbacks)
        out["asset_references_expected"] = exp["asset_references"]
    return out


def check_targets(rows: list[dict], variant: str = "prefect") -> list[tuple[str, str, str]]:
    """(target, verdict, evidence) for one variant; 'n/a' where the run has no data for it."""
    mine = [r for r in rows if r["variant"] == variant and r.get("ratio") is not None]
    plain = {(r["n"], r["threads"]): r for r in rows if r["variant"] == "plain"}
    results = []

    def verdict(ok):
        return "met" if ok else "NOT met"

    for key, n, limit in (("ratio_200_t4", 200, 1.10), ("ratio_1000", 1000, 1.05)):
        cell = [r for r in mine if r["n"] == n and r["threads"] == 4]
        if cell:
            results.append((TARGETS_TEXT[key], verdict(cell[0]["ratio"] <= limit), f"{cell[0]['ratio']:.2f}x"))
        else:
            results.append((TARGETS_TEXT[key], "n/a", "not measured"))
    worst_rss = max(mine, key=lambda r: r["rss_ratio"]) if mine else None
    if worst_rss:
        results.append(
            (TARGETS_TEXT["rss"], verdict(worst_rss["rss_ratio"] <= 1.3),
             f"worst {worst_rss['rss_ratio']:.3f}x (N={worst_rss['n']}, t{worst_rss['threads']})")
        )
    fixed = []
    for r in mine:
        base = plain.get((r["n"], r["threads"]))
        if base is None or r.get("first_node_s") is None or base.get("first_node_s") is None:
            continue
        extra = (r["first_node_s"] + (r.get("after_dbt_s") or 0)) - (base["first_node_s"] + (base.get("after_dbt_s") or 0))
        fixed.append((extra, r))
    if fixed:
        extra, worst = max(fixed, key=lambda item: item[0])
        results.append(
            (TARGETS_TEXT["fixed_cost"], verdict(extra <= 0.5),
             f"worst {extra:+.2f} s (N={worst['n']}, t{worst['threads']}: first node {worst['first_node_s']:.2f} s, "
             f"after dbt {worst.get('after_dbt_s') or 0:.2f} s)")
        )
    reads = [r for r in mine if "task_runs_readable_min" in r]
    if reads:
        ok = all(
            r["task_runs_readable_min"] >= r["task_runs_expected"] and r["asset_events_readable_min"] >= r["asset_events_expected"]
            for r in reads
        )
        results.append(
            (TARGETS_TEXT["readback"], verdict(ok),
             "; ".join(f"N={r['n']} t{r['threads']}: {r['task_runs_readable_min']}/{r['task_runs_expected']} task runs, "
                       f"{r['asset_events_readable_min']}/{r['asset_events_expected']} assets" for r in reads))
        )
    waves = [r for r in rows if r["variant"] == "per-wave" and r["n"] == 200 and r["threads"] == 4 and r.get("ratio")]
    if waves:
        results.append((TARGETS_TEXT["per_wave_200"], verdict(waves[0]["ratio"] <= 1.3), f"{waves[0]['ratio']:.2f}x"))
    return results


def fmt(value, spec: str, suffix: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:{spec}}{suffix}"


def markdown(rows: list[dict], meta: dict) -> str:
    m = meta["machine"]
    lines = ["# dbt-prefect benchmark results", ""]
    lines.append(
        f"Machine: {m.get('nproc')} CPUs ({m.get('cpu', '?')}), {m.get('memory_gib', '?')} GiB, {m.get('platform')}. "
        f"Python {m.get('python')}. Repository {m.get('git_commit', '?')}"
        f"{' (with uncommitted changes under python/)' if m.get('package_uncommitted_changes') else ''}."
    )
    for variant, versions in sorted(meta.get("versions", {}).items()):
        lines.append(f"- {variant}: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    lines.append(f"- Prefect server: {meta.get('server_settings', '?')}")
    lines.append(
        f"- started {meta.get('started')}, took {meta.get('elapsed_s', 0) / 60:.1f} min; "
        f"load average (1 min) during runs: {meta.get('load_min', '?')}–{meta.get('load_max', '?')}"
    )
    lines.append("")
    lines.append(
        "Wall = median wall time of the `invoke` call alone, in fresh processes; ratio = wall / plain dbt's; "
        "overhead = (wall − plain) / executed nodes; process = whole worker process (imports, flow run) / plain's; "
        "first node = invoke → dbt's first NodeStart; after dbt = dbt's last event → invoke returns; "
        "task runs = task runs the API returns in a terminal state right after invoke returns (minimum over "
        "runs) / expected; asset events = materializations delivered when invoke returns (the server stores "
        "them within its event flush interval) / expected; server CPU = CPU seconds the Prefect server "
        "spent during the run and until it was idle again; load = 1-minute load average before the run."
    )
    lines.append("")
    lines.append(
        "| N | nodes | threads | variant | runs | wall (s) | ratio | overhead (ms/node) | process ratio | "
        "peak RSS (MB) | RSS ratio | first node (s) | after dbt (s) | task runs | asset events | server CPU (s) | load |"
    )
    lines.append("| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        runs = f"{r.get('ok_runs', 0)}/{r['runs']}"
        if r.get("full_reparse_runs"):
            runs += f" ({r['full_reparse_runs']} full re-parse)"
        spread = ""
        if r.get("ok_runs", 0) > 1:
            spread = f" ({r['invoke_min_s']:.1f}–{r['invoke_max_s']:.1f})"
        tr = f"{r['task_runs_readable_min']}/{r['task_runs_expected']}" if "task_runs_readable_min" in r else "–"
        ae = f"{r['asset_events_readable_min']}/{r['asset_events_expected']}" if "asset_events_readable_min" in r else "–"
        lines.append(
            f"| {r['n']} | {r.get('executed_nodes', '–')} | {r['threads']} | {r['variant']} | {runs} | "
            f"{fmt(r.get('invoke_s'), '.2f')}{spread} | {fmt(r.get('ratio'), '.2f', '×') if r['variant'] != 'plain' else '1.00×'} | "
            f"{fmt(r.get('overhead_ms_per_node'), '.1f') if r['variant'] != 'plain' else '–'} | "
            f"{fmt(r.get('process_ratio'), '.2f', '×') if r['variant'] != 'plain' else '1.00×'} | "
            f"{fmt(r.get('peak_rss_mb'), '.0f')} | {fmt(r.get('rss_ratio'), '.2f', '×') if r['variant'] != 'plain' else '1.00×'} | "
            f"{fmt(r.get('first_node_s'), '.2f')} | {fmt(r.get('after_dbt_s'), '.2f')} | {tr} | {ae} | {fmt(r.get('server_cpu_s'), '.1f')} | {fmt(r.get('loadavg_1m'), '.1f')} |"
        )
    for variant in ("prefect", "prefect-metadata"):
        if not any(r["variant"] == variant for r in rows):
            continue
        lines += ["", f"## Targets ({variant})", "", "| target | verdict | measured |", "| --- | --- | --- |"]
        for target, verdict, evidence in check_targets(rows, variant):
            lines.append(f"| {target} | {verdict} | {evidence} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, server_label: str = "") -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install matplotlib, or the 'bench' extra)"
    series: dict[tuple, list] = {}
    for r in rows:
        if r["variant"] == "plain" or r.get("ratio") is None:
            continue
        nodes = r.get("executed_nodes") or r["n"]
        series.setdefault((r["variant"], r["threads"]), []).append((nodes, r["ratio"], r["overhead_ms_per_node"]))
    if not series:
        return "nothing to plot"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (variant, threads), points in sorted(series.items()):
        points.sort()
        ns = [p[0] for p in points]
        style = "o-" if variant != "official" else "s--"
        ax1.plot(ns, [p[1] for p in points], style, label=f"{variant}, threads={threads}")
        ax2.plot(ns, [p[2] for p in points], style, label=f"{variant}, threads={threads}")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("dbt nodes executed")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax1.axhline(1.0, color="grey", lw=1)
    ax1.axhline(1.10, color="green", lw=1, ls=":")
    ax1.axhline(1.05, color="green", lw=1, ls="--")
    ax1.set_ylabel("invoke wall / plain dbt")
    ax1.set_title(f"Ratio to plain dbt (median); server: {server_label}")
    ax2.set_ylabel("ms per executed node")
    ax2.set_title("Per-node overhead")
    ax2.axhline(0, color="grey", lw=1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot written to {path}"


def write_outputs(args, runs: list[dict], meta: dict) -> list[dict]:
    rows = summarise(runs)
    versions: dict = {}
    for r in runs:
        if r.get("versions") and r["variant"] not in versions:
            versions[r["variant"]] = r["versions"]
    loads = [r["loadavg_before"][0] for r in runs if r.get("loadavg_before")]
    meta = {**meta, "versions": versions}
    if loads:
        meta["load_min"], meta["load_max"] = min(loads), max(loads)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "summary": rows, "runs": runs}, indent=2, default=str))
    (args.out / "results.md").write_text(markdown(rows, meta))
    if args.no_plot:
        log("plot skipped (--no-plot)")
    else:
        label = "default settings" if "default" in meta.get("server_settings", "") else "flush 0.5 s"
        log(plot(rows, args.out / "overhead.png", label))
    return rows


def load_runs(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- main --------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000, 5000], help="N, models per project")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plan", nargs="+", default=None, metavar="N:T[,T]:R",
                        help="instead of sizes x threads x repeats, e.g. 200:1,4:3 1000:1,4:3 5000:4:1")
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--work-dir", type=Path, default=None, help="projects, databases, server home (default: a temp dir, removed)")
    parser.add_argument("--official-python", default=None,
                        help="python of a separate environment with prefect-dbt installed: adds the 'official' variant")
    parser.add_argument("--official-plan", nargs="+", default=None, metavar="N:T[,T]:R",
                        help="where the official runner runs (default: every cell of N <= 1000); R caps its repetitions")
    parser.add_argument("--per-wave", action="store_true",
                        help="also run PrefectDbtOrchestrator per wave (its default mode), one dbt build per wave")
    parser.add_argument("--metadata", action="store_true",
                        help="add the 'prefect-metadata' variant: dbt-prefect on a copy of the project whose seeds and "
                             "models run dbt_prefect.collect_metadata() (row counts and columns on every asset)")
    parser.add_argument("--variants", nargs="+", default=None, choices=VARIANT_ORDER, help="restrict the variants run")
    parser.add_argument("--smoke", action="store_true", help="N=20, threads 1, one repetition: checks the benchmark works")
    parser.add_argument("--resume", action="store_true", help="keep out/results.jsonl and skip runs already in it")
    parser.add_argument("--report-only", action="store_true", help="rebuild results.json/.md/.png from out/results.jsonl")
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker logs of successful runs")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--default-server", action="store_true",
                        help="run the Prefect server with its default settings (5 s event flush interval)")
    parser.add_argument("--run-timeout", type=float, default=3600.0)
    args = parser.parse_args()

    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / "results.jsonl"
    meta = {
        "machine": machine_info(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "argv": sys.argv[1:],
        "server_settings": "default settings (events flushed every 5 s)"
        if args.default_server
        else "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL=0.5",
    }

    if args.report_only:
        runs = load_runs(jsonl)
        if not runs:
            raise SystemExit(f"no runs in {jsonl}")
        previous = args.out / "results.json"
        if previous.exists():  # keep when and how the runs were made
            try:
                old_meta = json.loads(previous.read_text()).get("meta", {})
                meta.update(
                    {k: old_meta[k] for k in ("machine", "started", "elapsed_s", "argv", "server_settings") if k in old_meta}
                )
            except (json.JSONDecodeError, AttributeError):
                pass
        write_outputs(args, runs, meta)
        print((args.out / "results.md").read_text())
        return 0

    if args.smoke:
        plan = [(20, [1], 1)]
    elif args.plan:
        plan = parse_plan(args.plan)
    else:
        plan = [(n, list(args.threads), args.repeats) for n in args.sizes]
    official_plan = parse_plan(args.official_plan) if args.official_plan else None
    if args.official_python and not Path(args.official_python).exists():
        raise SystemExit(f"--official-python {args.official_python} does not exist")

    def variants_for(n: int, threads: int, rep: int) -> list[str]:
        chosen = ["plain", "prefect"]
        if args.per_wave:
            chosen.append("per-wave")
        if args.metadata:
            chosen.append("prefect-metadata")
        if args.official_python:
            if official_plan is None:
                if n <= 1000:
                    chosen.append("official")
            elif any(n == pn and threads in pt and rep < pr for pn, pt, pr in official_plan):
                chosen.append("official")
        if args.variants:
            chosen = [v for v in chosen if v in args.variants]
        return chosen

    done: set[tuple] = set()
    if args.resume:
        done = {(r["n"], r["threads"], r["rep"], r["variant"]) for r in load_runs(jsonl) if r.get("ok")}
    else:
        jsonl.unlink(missing_ok=True)

    # Stopped with SIGTERM: still run the cleanup below (stop the server we started).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    temp_work = args.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="dbt-prefect-bench-")) if temp_work else args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log(f"work dir {work}; results in {args.out}; load average {loadavg()}")
    t_start = time.perf_counter()
    server = PrefectServer(work, sys.executable, default_settings=args.default_server)
    broken = []
    try:
        server.start()
        for n, threads_list, repeats in plan:
            project = Project(work, n, sys.executable)
            project.prepare()
            metadata_project = None
            if args.metadata and (not args.variants or "prefect-metadata" in args.variants):
                metadata_project = Project(work, n, sys.executable, metadata=True)
                metadata_project.prepare()
            for threads in threads_list:
                for rep in range(repeats):
                    variants = variants_for(n, threads, rep)
                    if rep % 2 == 1:
                        variants = variants[::-1]  # alternate: A B C, C B A, ...
                    for order, variant in enumerate(variants):
                        if (n, threads, rep, variant) in done:
                            continue
                        source = metadata_project if variant == "prefect-metadata" else project
                        record = run_one(args, source, server, variant, threads, rep, order)
                        with open(jsonl, "a") as f:
                            f.write(json.dumps(record, default=str) + "\n")
                        log(f"N={n} threads={threads} rep={rep + 1}/{repeats} {variant}: {describe(record)}")
                        if variant in OWN_VARIANTS and (not record["ok"] or record["readback_complete"] is False):
                            broken.append(f"N={n} threads={threads} rep={rep} {variant}: "
                                          f"{record.get('error') or 'task runs or asset events missing after invoke'}")
    finally:
        server.stop()
        if temp_work:
            shutil.rmtree(work, ignore_errors=True)
    meta["elapsed_s"] = time.perf_counter() - t_start
    runs = load_runs(jsonl)
    write_outputs(args, runs, meta)
    print((args.out / "results.md").read_text())
    if broken:
        log("BROKEN runs:\n  " + "\n  ".join(broken))
        return 1
    log(f"done in {meta['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
