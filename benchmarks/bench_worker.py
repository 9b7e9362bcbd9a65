#!/usr/bin/env python3
"""One measured `dbt build`, in a fresh process. Started by run_benchmark.py.

    python bench_worker.py --variant plain|prefect|official --project DIR --threads T --out result.json

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
        self.node_starts = 0
        self.node_finished = 0
        self.parse_events: dict[str, int] = {}

    def __call__(self, msg) -> None:
        name = msg.info.name
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
        since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)).isoformat()
        rss_before = rss_now_kb()
        profiler = None
        if args.pyinstrument:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.001, async_mode="disabled")
            profiler.start()
        t0 = time.perf_counter()
        probe.t_invoke = t0
        result = runner.invoke(dbt_args(args.project, args.threads, with_paths=False), **invoke_kwargs)
        t1 = time.perf_counter()
        if profiler is not None:
            profiler.stop()
            Path(args.pyinstrument).write_text(profiler.output_text(unicode=False, color=False, show_all=False))
            Path(args.pyinstrument).with_suffix(".html").write_text(profiler.output_html())
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
    parser.add_argument("--variant", required=True, choices=["plain", "prefect", "official"])
    parser.add_argument("--project", required=True, type=Path)
    parser.add_argument("--threads", required=True, type=int)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--runner-kwargs", default="", help="JSON object of extra PrefectDbtRunner arguments")
    parser.add_argument("--pyinstrument", default="", help="write a pyinstrument profile of invoke (main thread only) here")
    args = parser.parse_args()
    args.project = args.project.resolve()

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
