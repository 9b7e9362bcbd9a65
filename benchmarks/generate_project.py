#!/usr/bin/env python3
"""Write a synthetic, layered dbt project on DuckDB for the benchmark.

    python benchmarks/generate_project.py 200 /tmp/bench-200

The project has N models in layers. Seeds sit at the bottom; every model selects from one
to three models (or seeds, for the first layer) of the layer below and joins them on `id`.
Three layers in four are views, every fourth layer is tables: views keep each node cheap
(the cost measured is per node, not per row), and the table layers keep DuckDB from
expanding ever deeper view nests. A third of the models carry one generic test
(`not_null` or `unique` on `id`, alternating). Everything is deterministic for a given N.

Node counts (what a full `dbt build` executes):
    models = N, tests = ceil(N / 3), seeds = max(1, N // 1000)
    e.g. N=200 -> 200 + 67 + 1 = 268 nodes; N=1000 -> 1000 + 334 + 1 = 1335 nodes.

The profile reads the DuckDB path from $BENCH_DUCKDB_PATH (default: bench.duckdb in the
project). `expected.json` records the counts the benchmark checks its readback against.
Uses only the standard library.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
from pathlib import Path

PROJECT_NAME = "bench"
SEED_ROWS = 20
TABLE_EVERY = 4  # every fourth layer is materialized as tables
MODULUS = 1_000_003


def layer_width(n_models: int) -> int:
    """About sqrt(N) models per layer: wide enough for 4 threads, deep enough to be a DAG."""
    return max(4, round(math.sqrt(n_models)))


def seed_count(n_models: int) -> int:
    return max(1, n_models // 1000)


def plan(n_models: int) -> dict:
    """The DAG: layers of model names, each model's parents, materialization and test."""
    rng = random.Random(n_models)
    seeds = [f"seed_{i:03d}" for i in range(seed_count(n_models))]
    width = layer_width(n_models)
    layers: list[list[str]] = []
    models: dict[str, dict] = {}
    index = 0
    while index < n_models:
        depth = len(layers)
        size = min(width, n_models - index)
        layer = []
        below = seeds if depth == 0 else layers[-1]
        materialized = "table" if depth % TABLE_EVERY == TABLE_EVERY - 1 else "view"
        for _ in range(size):
            name = f"m{depth:03d}_{index:05d}"
            k = min(len(below), rng.randint(1, 3))
            parents = rng.sample(below, k)
            test = None
            if index % 3 == 0:
                test = "not_null" if (index // 3) % 2 == 0 else "unique"
            models[name] = {"layer": depth, "parents": parents, "materialized": materialized, "test": test}
            layer.append(name)
            index += 1
        layers.append(layer)
    return {"seeds": seeds, "layers": layers, "models": models}


def model_sql(name: str, spec: dict) -> str:
    parents = spec["parents"]
    number = int(name.rsplit("_", 1)[1])
    lines = []
    if spec["materialized"] == "table":
        lines.append("{{ config(materialized='table') }}")
    value = " + ".join(f"p{i}.v" for i in range(len(parents)))
    # Modulo a prime keeps v below 1e6 however deep the DAG (sums would overflow INT32).
    lines.append(f"select p0.id, ({value} + {number}) % {MODULUS} as v")
    lines.append(f"from {{{{ ref('{parents[0]}') }}}} as p0")
    for i, parent in enumerate(parents[1:], start=1):
        lines.append(f"join {{{{ ref('{parent}') }}}} as p{i} on p{i}.id = p0.id")
    return "\n".join(lines) + "\n"


def schema_yml(layer: list[str], models: dict) -> str:
    out = ["version: 2", "", "models:"]
    for name in layer:
        out.append(f"  - name: {name}")
        out.append(f"    description: Synthetic benchmark model {name}.")
        test = models[name]["test"]
        if test:
            out.append("    columns:")
            out.append("      - name: id")
            out.append("        data_tests:")
            out.append(f"          - {test}")
    return "\n".join(out) + "\n"


def generate(n_models: int, destination: Path, force: bool = True, metadata_package: Path | None = None) -> dict:
    """Write the project into `destination` (replaced if it exists); return the expected counts.

    With `metadata_package` (the dbt-prefect repository root), the project installs the
    dbt_prefect package from there and runs its `collect_metadata()` post-hook on every
    seed and model, as a user who wants row counts and columns on the assets would; run
    `dbt deps` before building it.
    """
    if n_models < 1:
        raise ValueError("N must be at least 1")
    destination = Path(destination)
    if destination.exists():
        if not force:
            raise FileExistsError(destination)
        shutil.rmtree(destination)
    dag = plan(n_models)
    (destination / "models").mkdir(parents=True)
    (destination / "seeds").mkdir()
    (destination / "dbt_project.yml").write_text(
        "\n".join(
            [
                f"name: {PROJECT_NAME}",
                "version: '1.0'",
                "config-version: 2",
                f"profile: {PROJECT_NAME}",
                "model-paths: [models]",
                "seed-paths: [seeds]",
                "models:",
                f"  {PROJECT_NAME}:",
                "    +materialized: view",
                *(
                    [
                        "    +post-hook: \"{{ dbt_prefect.collect_metadata() }}\"",
                        "seeds:",
                        f"  {PROJECT_NAME}:",
                        "    +post-hook: \"{{ dbt_prefect.collect_metadata() }}\"",
                    ]
                    if metadata_package is not None
                    else []
                ),
                "",
            ]
        )
    )
    if metadata_package is not None:
        (destination / "packages.yml").write_text(f"packages:\n  - local: {Path(metadata_package).resolve()}\n")
    (destination / "profiles.yml").write_text(
        "\n".join(
            [
                f"{PROJECT_NAME}:",
                "  target: dev",
                "  outputs:",
                "    dev:",
                "      type: duckdb",
                "      path: \"{{ env_var('BENCH_DUCKDB_PATH', 'bench.duckdb') }}\"",
                "      threads: 1",
                "",
            ]
        )
    )
    for seed in dag["seeds"]:
        rows = ["id,v"] + [f"{i},{i * 10}" for i in range(1, SEED_ROWS + 1)]
        (destination / "seeds" / f"{seed}.csv").write_text("\n".join(rows) + "\n")
    for depth, layer in enumerate(dag["layers"]):
        folder = destination / "models" / f"layer_{depth:03d}"
        folder.mkdir()
        for name in layer:
            (folder / f"{name}.sql").write_text(model_sql(name, dag["models"][name]))
        (folder / "schema.yml").write_text(schema_yml(layer, dag["models"]))

    models = dag["models"]
    n_tests = sum(1 for spec in models.values() if spec["test"])
    n_tables = sum(1 for spec in models.values() if spec["materialized"] == "table")
    expected = {
        "n": n_models,
        "models": len(models),
        "views": len(models) - n_tables,
        "tables": n_tables,
        "tests": n_tests,
        "seeds": len(dag["seeds"]),
        "layers": len(dag["layers"]),
        "layer_width": layer_width(n_models),
        # A green `dbt build` runs every node; none is ephemeral, so each gets a task run.
        "nodes": len(models) + n_tests + len(dag["seeds"]),
        "task_runs": len(models) + n_tests + len(dag["seeds"]),
        # One materialization event per model and seed.
        "asset_materializations": len(models) + len(dag["seeds"]),
        # None: a full build materializes every upstream asset before its children read it.
        "asset_references": 0,
        "metadata_hooks": metadata_package is not None,
    }
    (destination / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    return expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", type=int, help="number of models")
    parser.add_argument("destination", type=Path, help="project directory to (re)create")
    parser.add_argument("--metadata-package", type=Path, default=None,
                        help="dbt-prefect's repository root: install the dbt package and run collect_metadata() on every node")
    args = parser.parse_args()
    expected = generate(args.n, args.destination, metadata_package=args.metadata_package)
    print(json.dumps(expected, indent=2))


if __name__ == "__main__":
    main()
