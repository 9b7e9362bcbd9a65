#!/usr/bin/env python3
"""One measured `dbt build`, in a fresh process. Started by run_benchmark.py.

    python bench_worker.py --variant plain|prefect|per-wave|official --project DIR --threads T --out result.json

Variants:
- plain:    dbtRunner(callbacks=[probe]).invoke(["build", ...]): the baseline.
- prefect:  dbt_prefect's PrefectDbtRunner(settings=...).invoke(["build", ...]) inside a flow,
            assets on. --runner-kwargs passes extra constructor arguments (the hook for
            metadata collection once that lands).
- official: prefect_dbt's PrefectDbtRunner, the same way. Run with the Python of a separate
            environment that has prefect-dbt installed; dbt-prefect never depends on it.

Measured: the wall time of the invoke call alone (perf_counter), the time from invoke to
dbt's first NodeStart (a dbt callback: the same probe in every variant), peak RSS of the
process (getrusage ru_maxrss), and, for the Prefect variants, how many task runs and asset
events the server returns *immediately* after invoke returns, with no waiting. The result
is written as JSON to --out; the exit code is 0 when the measurement itself worked (dbt
succeeded and nothing raised), whatever the numbers.

The DuckDB file and target/ are prepared by the caller; this script only runs and reports.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

T_START = time.perf_counter()

_TERMINAL = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]


def rss_now_kb() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_kb() -> int:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class Probe:
    """A dbt callback: when the first node started, and how dbt parsed."""

    def __init__(self) -> None:
        self.t_invoke = None
        self.t_first_node = None
        self.t_last_event = None
        self.node_starts = 0
        self.node_finished = 0
        self.parse_events: dict[str, int] = {}

    def __call__(self, msg) -> None:
        name = msg.info.name
        self.t_last_event = time.perf_counter()
        if name == "NodeStart":
            if self.t_first_node is None:
                self.t_first_node = time.perf_counter()
            self.node_starts += 1
        elif name == "NodeFinished":
            self.node_finished += 1
        elif "Pars" in name or "Reparse" in name:
            self.parse_events[name] = self.parse_events.get(name, 0) + 1


def dbt_args(project: Path, threads: int, with_paths: bool) -> list[str]:
    args = ["build", "--threads", str(threads)]
    if with_paths:
        args += ["--project-dir", str(project), "--profiles-dir", str(project)]
    return args


def summarise_result(result) -> dict:
    out: dict = {"dbt_success": bool(getattr(result, "success", False))}
    exc = getattr(result, "exception", None)
    if exc is not None:
        out["dbt_exception"] = f"{type(exc).__name__}: {exc}"[:2000]
    entries = getattr(getattr(result, "result", None), "results", None) or []
    statuses: dict[str, int] = {}
    types: dict[str, int] = {}
    for entry in entries:
        status = getattr(entry, "status", "")
        status = str(getattr(status, "value", status))
        statuses[status] = statuses.get(status, 0) + 1
        rtype = getattr(getattr(entry, "node", None), "resource_type", "")
        rtype = str(getattr(rtype, "value", rtype))
        types[rtype] = types.get(rtype, 0) + 1
    out["executed_nodes"] = len(entries)
    out["statuses"] = statuses
    out["resource_types"] = types
    return out


def readback(api_url: str, flow_run_id: str, since_iso: str) -> dict:
    """What the server shows right now for this flow run: no waiting, no retries."""
    import httpx

    t0 = time.perf_counter()
    flow_filter = {"flow_runs": {"id": {"any_": [flow_run_id]}}}
    related = {"id": [f"prefect.flow-run.{flow_run_id}"]}
    out: dict = {}
    with httpx.Client(base_url=api_url, timeout=60) as client:
        def count_task_runs(extra: dict) -> int:
            response = client.post("/task_runs/count", json={**flow_filter, **extra})
            response.raise_for_status()
            return int(response.json())

        def count_events(event_filter: dict, with_related: bool = True) -> int:
            body = {"occurred": {"since": since_iso}, "event": event_filter}
            if with_related:
                body["related"] = related
            response = client.post("/events/filter", json={"filter": body, "limit": 1})
            response.raise_for_status()
            return int(response.json()["total"])

        out["task_runs"] = count_task_runs({})
        out["task_runs_terminal"] = count_task_runs({"task_runs": {"state": {"type": {"any_": _TERMINAL}}}})
        out["asset_materializations"] = count_events({"prefix": ["prefect.asset.materialization."]})
        out["asset_materializations_succeeded"] = count_events({"name": ["prefect.asset.materialization.succeeded"]})
        out["asset_references"] = count_events({"name": ["prefect.asset.referenced"]})
        # The same counts without the flow-run filter, in case a runner emits asset
        # events without the flow run as a related resource (runs never overlap).
        out["asset_materializations_any"] = count_events({"prefix": ["prefect.asset.materialization."]}, False)
    out["readback_query_s"] = time.perf_counter() - t0
    return out


class Timeline:
    """Diagnostics (--timeline): every 0.25 s, where the events of a Prefect variant are.

    Samples dbt's progress (NodeFinished seen by the probe), the runner's recorder queue
    (dbt_prefect only), Prefect's events and API-log worker queues, and how many task runs
    of this flow run the server already returns. Costs a little itself: diagnostic only.
    """

    def __init__(self, probe: Probe, api_url: str, path: Path) -> None:
        import threading

        self.probe = probe
        self.api_url = api_url
        self.path = path
        self.flow_run_id = None
        self.recorders: list = []
        self.rows: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-timeline", daemon=True)
        try:  # capture dbt_prefect's recorder to read its queue length
            from dbt_prefect.runner import recorder as tracking

            original_start = tracking.RunRecorder.start
            recorders = self.recorders

            def start(recorder):
                recorders.append(recorder)
                return original_start(recorder)

            tracking.RunRecorder.start = start
        except ImportError:
            pass

    def start(self, flow_run_id: str) -> None:
        self.flow_run_id = flow_run_id
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.path.write_text(json.dumps({"cpu_by_thread": self.cpu_by_thread(), "rows": self.rows}, indent=1))

    @staticmethod
    def _qsize(service_cls) -> int:
        try:
            instances = getattr(service_cls, "_instances", {}) or {}
            return sum(inst._queue.qsize() for inst in list(instances.values()))
        except Exception:
            return -1

    @staticmethod
    def thread_cpu() -> dict[str, float]:
        """CPU seconds (user + system) per live Python thread, from /proc/self/task."""
        import threading

        hz = os.sysconf("SC_CLK_TCK")
        names = {t.native_id: t.name for t in threading.enumerate()}
        out: dict[str, float] = {}
        for tid, name in names.items():
            try:
                fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, TypeError):
                continue
            if name.startswith("Thread-") and "(worker)" in name:
                name = "dbt worker threads"
            key = f"{name}#{tid}"
            out[key] = (int(fields[11]) + int(fields[12])) / hz
        return out

    def cpu_by_thread(self) -> dict[str, float]:
        """The last CPU figure seen for every thread, summed per thread name."""
        last: dict[str, float] = {}
        for row in self.rows:
            for key, value in row.get("cpu", {}).items():
                last[key] = value
        totals: dict[str, float] = {}
        for key, value in last.items():
            name = key.rsplit("#", 1)[0]
            totals[name] = round(totals.get(name, 0.0) + value, 2)
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))

    def _run(self) -> None:
        import httpx
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        with httpx.Client(base_url=self.api_url, timeout=30) as client:
            while not self._stop.wait(0.25):
                t = time.perf_counter() - (self.probe.t_invoke or time.perf_counter())
                flow_filter = {"flow_runs": {"id": {"any_": [self.flow_run_id]}}}
                try:
                    server = int(client.post("/task_runs/count", json=flow_filter).json())
                    terminal = int(
                        client.post(
                            "/task_runs/count",
                            json={**flow_filter, "task_runs": {"state": {"type": {"any_": _TERMINAL}}}},
                        ).json()
                    )
                    assets = int(
                        client.post(
                            "/events/filter",
                            json={
                                "filter": {
                                    "event": {"prefix": ["prefect.asset.materialization."]},
                                    "related": {"id": [f"prefect.flow-run.{self.flow_run_id}"]},
                                },
                                "limit": 1,
                            },
                        ).json()["total"]
                    )
                except Exception:
                    server = terminal = assets = -1
                recorder_q = sum(r._queue.qsize() for r in self.recorders) if self.recorders else -1
                self.rows.append(
                    {
                        "t": round(t, 3),
                        "dbt_finished": self.probe.node_finished,
                        "recorder_queue": recorder_q,
                        "events_queue": self._qsize(EventsWorker),
                        "log_queue": self._qsize(APILogWorker),
                        "server_task_runs": server,
                        "server_terminal": terminal,
                        "server_asset_events": assets,
                        "cpu": self.thread_cpu(),
                    }
                )


def run_plain(args, probe: Probe) -> dict:
    from dbt.cli.main import dbtRunner

    t_imported = time.perf_counter()
    runner = dbtRunner(callbacks=[probe])
    rss_before = rss_now_kb()
    t0 = time.perf_counter()
    probe.t_invoke = t0
    result = runner.invoke(dbt_args(args.project, args.threads, with_paths=True))
    t1 = time.perf_counter()
    return {
        "import_s": t_imported - T_START,
        "invoke_s": t1 - t0,
        "rss_before_invoke_kb": rss_before,
        **summarise_result(result),
    }


def run_in_flow(args, probe: Probe) -> dict:
    import datetime as dt

    from prefect import flow
    from prefect.context import FlowRunContext
    from prefect.settings import get_current_settings

    if args.variant == "official":
        import prefect_dbt.core.runner as official_runner
        from prefect_dbt import PrefectDbtRunner, PrefectDbtSettings

        # The official runner builds its own dbtRunner and turns invoke() kwargs into
        # CLI flags, so the probe is added where it creates the dbtRunner.
        base = official_runner.dbtRunner

        class ProbedDbtRunner(base):  # type: ignore[misc, valid-type]
            def __init__(self, manifest=None, callbacks=None):
                super().__init__(manifest=manifest, callbacks=[*(callbacks or []), probe])

        official_runner.dbtRunner = ProbedDbtRunner
        invoke_kwargs: dict = {}
    else:
        from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings

        invoke_kwargs = {"callbacks": [probe]}

    # dbt itself is imported before the timed region in every variant, as plain dbt must
    # (dbt_prefect imports it lazily, inside invoke); import costs are reported apart.
    import dbt.cli.main  # noqa: F401

    runner_kwargs = json.loads(args.runner_kwargs) if args.runner_kwargs else {}
    api_url = get_current_settings().api.url
    t_imported = time.perf_counter()

    @flow(name=f"dbt-benchmark-{args.variant}", persist_result=False, log_prints=False)
    def benchmark_flow() -> dict:
        flow_run_id = str(FlowRunContext.get().flow_run.id)
        runner = PrefectDbtRunner(
            settings=PrefectDbtSettings(project_dir=args.project, profiles_dir=args.project),
            raise_on_failure=False,
            **runner_kwargs,
        )
        timeline = Timeline(probe, api_url, Path(args.timeline)) if args.timeline else None
        if timeline is not None:
            timeline.start(flow_run_id)
        since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)).isoformat()
        rss_before = rss_now_kb()
        profiler = None
        if args.pyinstrument:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.001, async_mode="disabled")
            profiler.start()
        t0 = time.perf_counter()
        probe.t_invoke = t0
        if args.variant == "per-wave":
            result = orchestrated_build(args, probe)
        else:
            result = runner.invoke(dbt_args(args.project, args.threads, with_paths=False), **invoke_kwargs)
        t1 = time.perf_counter()
        if profiler is not None:
            profiler.stop()
            Path(args.pyinstrument).write_text(profiler.output_text(unicode=False, color=False, show_all=False))
            Path(args.pyinstrument).with_suffix(".html").write_text(profiler.output_html())
        if timeline is not None:
            time.sleep(1.0)
            timeline.stop()
        out = {"invoke_s": t1 - t0, "rss_before_invoke_kb": rss_before, "flow_run_id": flow_run_id}
        out.update(summarise_result(result))
        try:
            out["readback"] = readback(api_url, flow_run_id, since)
        except Exception as exc:  # report, do not hide the timing
            out["readback_error"] = f"{type(exc).__name__}: {exc}"
        out["t_flow_body_end"] = time.perf_counter()
        return out

    t_flow = time.perf_counter()
    out = benchmark_flow()
    t_flow_end = time.perf_counter()
    out["import_s"] = t_imported - T_START
    # Flow-run creation and teardown around the invoke call: a cost of any flow.
    out["flow_outside_invoke_s"] = (t_flow_end - t_flow) - out["invoke_s"]
    out.pop("t_flow_body_end", None)
    return out


def orchestrated_build(args, probe: Probe):
    """PrefectDbtOrchestrator per wave (its default): one dbt build per wave of the DAG.

    Its result is shaped like a dbtRunnerResult for summarise_result: success, and one
    entry per node with dbt's status and resource type."""
    from types import SimpleNamespace

    from dbt_prefect import PrefectDbtOrchestrator, PrefectDbtSettings

    orchestrator = PrefectDbtOrchestrator(
        settings=PrefectDbtSettings(project_dir=args.project, profiles_dir=args.project),
        threads=args.threads,
        raise_on_failure=False,
    )
    built = orchestrator.run_build()
    entries = [
        SimpleNamespace(status=r.status, node=SimpleNamespace(resource_type=r.node.resource_type))
        for r in built.results
    ]
    return SimpleNamespace(success=built.success, exception=None, result=SimpleNamespace(results=entries))


def versions(variant: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    names = ["dbt-core", "dbt-duckdb", "duckdb", "prefect"]
    names.append("prefect-dbt" if variant == "official" else "dbt-prefect")
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", required=True, choices=["plain", "prefect", "per-wave", "official"])
    parser.add_argument("--project", required=True, type=Path)
    parser.add_argument("--threads", required=True, type=int)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--runner-kwargs", default="", help="JSON object of extra PrefectDbtRunner arguments")
    parser.add_argument("--pyinstrument", default="", help="write a pyinstrument profile of invoke (main thread only) here")
    parser.add_argument("--timeline", default="", help="diagnostics: write queue lengths and per-thread CPU over time (JSON) here; delays the readback by 1 s")
    parser.add_argument("--switch-interval", type=float, default=0.0,
                        help="experiment: sys.setswitchinterval(seconds) before running (default: Python's 0.005)")
    args = parser.parse_args()
    args.project = args.project.resolve()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)

    probe = Probe()
    out: dict = {"variant": args.variant, "threads": args.threads, "pid": os.getpid()}
    ok = False
    try:
        if args.variant == "plain":
            out.update(run_plain(args, probe))
        else:
            out.update(run_in_flow(args, probe))
        ok = bool(out.get("dbt_success"))
        if not ok:
            out["error"] = out.get("dbt_exception") or f"dbt build did not succeed: {out.get('statuses')}"
    except BaseException as exc:  # noqa: BLE001 - report every failure as data
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()[-8000:]
    out["ok"] = ok
    if probe.t_first_node is not None and probe.t_invoke is not None:
        out["first_node_s"] = probe.t_first_node - probe.t_invoke
    if probe.t_last_event is not None and "invoke_s" in out and probe.t_invoke is not None:
        # From dbt's last event (CommandCompleted) to invoke's return: the runner's tail.
        out["after_dbt_s"] = probe.t_invoke + out["invoke_s"] - probe.t_last_event
    out["node_starts_seen"] = probe.node_starts
    out["node_finished_seen"] = probe.node_finished
    out["parse_events"] = probe.parse_events
    out["peak_rss_kb"] = peak_rss_kb()
    out["worker_total_s"] = time.perf_counter() - T_START
    try:
        out["versions"] = versions(args.variant)
    except Exception:
        pass
    args.out.write_text(json.dumps(out, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
