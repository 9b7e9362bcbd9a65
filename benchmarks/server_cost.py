#!/usr/bin/env python3
"""What each kind of item a dbt build sends costs a Prefect server, in CPU.

    python benchmarks/server_cost.py [--items 300] [--batch 10 100]

Starts a `prefect server` with its default settings, then posts `--items` items of one
kind at a time, in requests of `--batch` items, as dbt-prefect's outbox does: task-run
state events (one terminal event per task run, with the related flow run and flow), asset
materialization events, asset reference events, and log lines. After each kind it waits
until the server is idle and reports the server's CPU seconds per item. Nothing here
depends on dbt; the events have the shape dbt-prefect sends (see
python/dbt_prefect/runner/recorder.py and asset_events.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--batch", type=int, nargs="+", default=[10, 100])
    args = parser.parse_args()

    import httpx
    import run_benchmark as bench

    work = Path(tempfile.mkdtemp(prefix="dbt-prefect-server-cost-"))
    server = bench.PrefectServer(work, sys.executable, default_settings=True)
    server.start()
    hz = os.sysconf("SC_CLK_TCK")
    try:
        client = httpx.Client(base_url=server.api_url, timeout=60)
        flow = client.post("/flows/", json={"name": "server-cost"}).json()
        flow_run = client.post("/flow_runs/", json={"flow_id": flow["id"], "name": "server-cost"}).json()
        related = [
            {"prefect.resource.id": f"prefect.flow-run.{flow_run['id']}", "prefect.resource.role": "flow-run",
             "prefect.resource.name": "server-cost"},
            {"prefect.resource.id": f"prefect.flow.{flow['id']}", "prefect.resource.role": "flow",
             "prefect.resource.name": "server-cost"},
        ]

        def task_run_state(i: int) -> dict:
            task_run_id, t = str(uuid.uuid4()), now()
            return {
                "occurred": t, "event": "prefect.task-run.Completed", "id": str(uuid.uuid4()),
                "resource": {
                    "prefect.resource.id": f"prefect.task-run.{task_run_id}", "prefect.resource.name": f"model m{i}",
                    "prefect.run-count": "1", "prefect.state-message": "", "prefect.state-name": "Completed",
                    "prefect.state-timestamp": t, "prefect.state-type": "COMPLETED", "prefect.orchestration": "client",
                },
                "related": related,
                "payload": {
                    "intended": {"from": None, "to": "COMPLETED"}, "initial_state": None,
                    "validated_state": {"type": "COMPLETED", "name": "Completed", "message": "", "state_details": {}, "data": None},
                    "task_run": {
                        "name": f"model m{i}", "task_key": f"dbt-model.bench.m{i}", "dynamic_key": task_run_id,
                        "empirical_policy": {"max_retries": 0, "retry_delay_seconds": 0.0}, "tags": [], "labels": {},
                        "task_inputs": {}, "run_count": 1, "flow_run_run_count": 1, "expected_start_time": t,
                        "start_time": t, "end_time": t, "total_run_time": 0.05,
                    },
                },
            }

        def asset_event(i: int, name: str = "prefect.asset.materialization.succeeded") -> dict:
            return {
                "occurred": now(), "event": name, "id": str(uuid.uuid4()),
                "resource": {"prefect.resource.id": f"duckdb://bench/main/m{i}", "prefect.resource.name": f"bench.main.m{i}"},
                "related": [
                    {"prefect.resource.id": f"duckdb://bench/main/p{i}", "prefect.resource.role": "asset"},
                    {"prefect.resource.id": "dbt", "prefect.resource.role": "asset-materialized-by"},
                    {"prefect.resource.id": f"prefect.task-run.{uuid.uuid4()}", "prefect.resource.role": "task-run"},
                    *related,
                ],
                "payload": {"unique_id": f"model.bench.m{i}", "materialized": "view", "message": "OK"},
            }

        def log_line(i: int) -> dict:
            return {"name": "prefect.task_runs", "level": 20, "timestamp": now(), "flow_run_id": flow_run["id"],
                    "task_run_id": None, "message": f"{i} of 268 OK created sql view model main.m{i} [OK in 0.05s]"}

        kinds = {
            "task-run state event": (task_run_state, "/events"),
            "asset materialization event": (asset_event, "/events"),
            "asset reference event": (lambda i: asset_event(i, "prefect.asset.referenced"), "/events"),
            "log line": (log_line, "/logs/"),
        }
        rows = []
        for batch in args.batch:
            for kind, (make, path) in kinds.items():
                server.wait_idle()
                items = [make(i) for i in range(args.items)]
                ticks = server._cpu_ticks()
                for start in range(0, len(items), batch):
                    client.post(path, content=json.dumps(items[start : start + batch])).raise_for_status()
                server.wait_idle(window=1.0)
                cpu = (server._cpu_ticks() - ticks) / hz
                rows.append((kind, batch, cpu * 1000 / args.items))
                bench.log(f"{kind}, {batch} per request: {cpu * 1000 / args.items:.1f} ms of server CPU per item")
    finally:
        server.stop()
    print("\n| item | per request | server CPU per item |\n| --- | ---: | ---: |")
    for kind, batch, ms in rows:
        print(f"| {kind} | {batch} | {ms:.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
