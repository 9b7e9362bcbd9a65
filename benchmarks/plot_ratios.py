#!/usr/bin/env python3
"""One plot of the ratio to plain dbt against the number of dbt nodes, for several runs.

    python benchmarks/plot_ratios.py OUT.png LABEL=DIR [LABEL=DIR ...]

Each DIR is a `run_benchmark.py --out` directory (its results.json); each variant of each
run is one line, with the median ratio at each size and its range over the repetitions
(each repetition's wall against the median of plain dbt's) as error bars.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def series(results: dict) -> dict[str, list[tuple[int, float, float, float]]]:
    runs = [r for r in results["runs"] if r.get("ok")]
    plain = {}
    for n in {r["n"] for r in runs}:
        walls = [r["invoke_s"] for r in runs if r["n"] == n and r["variant"] == "plain"]
        if walls:
            plain[n] = statistics.median(walls)
    lines: dict[str, list[tuple[int, float, float, float]]] = {}
    for row in results["summary"]:
        if row["variant"] == "plain" or row.get("ratio") is None or row["n"] not in plain:
            continue
        ratios = [
            r["invoke_s"] / plain[row["n"]] for r in runs if r["n"] == row["n"] and r["variant"] == row["variant"]
        ]
        lines.setdefault(row["variant"], []).append((row["executed_nodes"], row["ratio"], min(ratios), max(ratios)))
    return lines


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(sys.argv[1])
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    # One colour per variant, one marker per run, so a run of one size joins its variant's line.
    colours = {
        "prefect": "tab:orange",
        "per-wave": "tab:blue",
        "prefect-metadata": "tab:purple",
        "official": "tab:grey",
    }
    for number, spec in enumerate(sys.argv[2:]):
        marker = "osD^v"[number % 5]
        label, directory = spec.split("=", 1)
        results = json.loads((Path(directory) / "results.json").read_text())
        for variant, points in sorted(series(results).items()):
            points.sort()
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            errors = [[y - p[2] for y, p in zip(ys, points)], [p[3] - y for y, p in zip(ys, points)]]
            name = {"prefect": "PrefectDbtRunner", "per-wave": "orchestrator, per wave"}.get(variant, variant)
            ax.errorbar(
                xs, ys, yerr=errors, fmt=f"{marker}-", capsize=4, color=colours.get(variant), label=f"{name}, {label}"
            )
    ax.axhline(1.0, color="grey", lw=1)
    # The targets of issue 27, at the node counts of 200, 1,000 and 5,000 models.
    ax.plot([268, 1335, 6672], [1.10, 1.15, 1.25], "x--", color="orange", lw=1, label="per-wave targets")
    ax.plot([6672], [1.10], "x", color="green", markersize=9, label="runner target at 5,000 models")
    ax.set_xscale("log")
    ax.set_xlabel("dbt nodes executed (generated projects of 200, 1,000 and 5,000 models, threads 4)")
    ax.set_ylabel("invoke wall / plain dbt's (median, range)")
    ax.set_title("dbt-prefect against plain dbt, fresh processes, first invoke")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
