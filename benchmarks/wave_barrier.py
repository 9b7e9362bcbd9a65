#!/usr/bin/env python3
"""What the per-wave barrier alone costs, from one plain dbt build's node times.

    python benchmarks/wave_barrier.py PROJECT_DIR [--threads 4]

PROJECT_DIR must hold target/run_results.json and target/manifest.json of a plain
`dbt build` (run it first). The script asks PrefectDbtOrchestrator(PER_WAVE).plan() for
the waves, then schedules the nodes with the times dbt measured, twice, on --threads
threads, each ready node first by depth:
  - as one `dbt build` does: a node starts when its parents (and the tests gating them)
    are done;
  - as per wave does: the waves one after another, each scheduled on its own, with
    nothing spent between waves.
The ratio of the two is the cost of the barrier with zero cost per wave: what running
the waves through a warmer dbt session could never win back. A model, not a timing.
"""

from __future__ import annotations

import argparse
import heapq
import json
from collections import defaultdict
from pathlib import Path


def schedule(nodes: list[str], parents: dict[str, list[str]], seconds: dict[str, float], threads: int) -> float:
    """Makespan of list scheduling ``nodes`` (parents outside them count as done)."""
    inside = set(nodes)
    waits = {node: {p for p in parents[node] if p in inside} for node in nodes}
    children: dict[str, list[str]] = defaultdict(list)
    for node, before in waits.items():
        for parent in before:
            children[parent].append(node)
    depth: dict[str, int] = {}
    for node in nodes:  # nodes come in an order where parents come first
        depth[node] = 1 + max((depth[p] for p in waits[node]), default=0)
    remaining = {node: len(before) for node, before in waits.items()}
    ready = [(depth[n], n) for n in nodes if remaining[n] == 0]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now, free, done = 0.0, threads, 0
    while done < len(nodes):
        while ready and free:
            _, node = heapq.heappop(ready)
            heapq.heappush(running, (now + seconds[node], node))
            free -= 1
        now, node = heapq.heappop(running)
        free, done = free + 1, done + 1
        for child in children[node]:
            remaining[child] -= 1
            if remaining[child] == 0:
                heapq.heappush(ready, (depth[child], child))
    return now


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", type=Path)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    from dbt_prefect import ExecutionMode, PrefectDbtOrchestrator, PrefectDbtSettings

    results = json.loads((args.project / "target" / "run_results.json").read_text())
    manifest = json.loads((args.project / "target" / "manifest.json").read_text())
    seconds = {r["unique_id"]: r["execution_time"] for r in results["results"]}
    settings = PrefectDbtSettings(project_dir=args.project, profiles_dir=args.project)
    plan = PrefectDbtOrchestrator(settings=settings, execution_mode=ExecutionMode.PER_WAVE).plan()
    waves = [[n.unique_id for n in wave.nodes if n.unique_id in seconds] for wave in plan.waves]
    order = [node for wave in waves for node in wave]
    entries = {**manifest["nodes"], **manifest.get("unit_tests", {})}
    parents = {
        node: [p for p in entries[node].get("depends_on", {}).get("nodes", []) if p in seconds] for node in order
    }
    # In one dbt build, a test gates the children of what it tests.
    children_of: dict[str, list[str]] = defaultdict(list)
    for node in order:
        if entries[node]["resource_type"] != "test":
            for parent in parents[node]:
                children_of[parent].append(node)
    gated = {node: list(parents[node]) for node in order}
    for node in order:
        if entries[node]["resource_type"] == "test":
            for tested in parents[node]:
                for child in children_of[tested]:
                    gated[child].append(node)
    one_build = schedule(order, gated, seconds, args.threads)
    per_wave = sum(schedule(wave, gated, seconds, args.threads) for wave in waves)
    print(
        json.dumps(
            {
                "nodes": len(order),
                "waves": len(waves),
                "threads": args.threads,
                "node_seconds": round(sum(seconds.values()), 2),
                "one_build_s": round(one_build, 2),
                "per_wave_no_cost_between_s": round(per_wave, 2),
                "barrier_ratio": round(per_wave / one_build, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
