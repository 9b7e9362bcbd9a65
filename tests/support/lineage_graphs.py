"""Synthetic builds for the lineage picture, at any size, with a lineage known by construction.

A build of ``pipelines`` independent pipelines, each a chain of ``depth`` nodes: a source,
a seed-fed staging model, then models down to a mart. Layer ``k`` of every pipeline is in
the folder ``models/layer_k`` (the source and seed in ``sources`` and ``seeds``). So the
upstream path of a node is the part of its own chain above it, and its direct downstream
is the next node of the chain. Plain Python, no dbt: the unit tests and the browser check
(tests/scripts/check_ui_pages.py) use it.
"""

from __future__ import annotations

from collections.abc import Iterable

from dbt_prefect.runner.report.mermaid import CheckCounts, LineageNode


def node_id(pipeline: int, layer: int) -> str:
    kind = "source" if layer == 0 else "seed" if layer == 1 else "model"
    return f"{kind}.synthetic.p{pipeline:04d}_l{layer}"


def folder_of_layer(layer: int) -> str:
    return "sources" if layer == 0 else "seeds" if layer == 1 else f"models/layer_{layer}"


def pipeline_build(
    pipelines: int,
    depth: int = 10,
    failed: Iterable[tuple[int, int]] = (),
    failed_tests: Iterable[tuple[int, int]] = (),
    task_runs: bool = True,
) -> list[LineageNode]:
    """``pipelines * depth`` nodes. A node in ``failed`` (pipeline, layer) errors and the
    rest of its chain is skipped; a node in ``failed_tests`` succeeds but one of its two
    tests fails. Every model has two tests; the source is read, not run."""
    failed = set(failed)
    failed_tests = set(failed_tests)
    nodes = []
    for p in range(pipelines):
        broken_at = min((layer for pipeline, layer in failed if pipeline == p), default=None)
        for layer in range(depth):
            kind = "source" if layer == 0 else "seed" if layer == 1 else "model"
            if layer == 0:
                status = None
            elif broken_at is not None and layer == broken_at:
                status = "error"
            elif broken_at is not None and layer > broken_at:
                status = "skipped"
            else:
                status = "success"
            if kind != "model":
                tests = CheckCounts()
            elif status in ("skipped", "error"):
                tests = CheckCounts(skipped=2)
            elif (p, layer) in failed_tests:
                tests = CheckCounts(passed=1, failed=1)
            else:
                tests = CheckCounts(passed=2)
            parents: tuple[str, ...] = ()
            if layer == 2:
                parents = (node_id(p, 0), node_id(p, 1))
            elif layer > 2:
                parents = (node_id(p, layer - 1),)
            nodes.append(
                LineageNode(
                    unique_id=node_id(p, layer),
                    name=f"p{p:04d}_l{layer}",
                    resource_type=kind,
                    status=status,
                    folder=folder_of_layer(layer),
                    parents=parents,
                    tests=tests,
                    task_run_id=f"00000000-0000-0000-{p:04d}-{layer:012d}" if task_runs and status else None,
                )
            )
    return nodes
