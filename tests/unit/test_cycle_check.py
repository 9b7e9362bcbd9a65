"""install_fast_cycle_check (_compat/dbt.py): dbt's Linker answers as before, only sooner."""

from __future__ import annotations

import networkx
from dbt.compilation import Linker

from dbt_prefect._compat.dbt import install_fast_cycle_check


def linker(edges: list[tuple[str, str]]) -> Linker:
    built = Linker()
    for parent, child in edges:
        built.dependency(child, parent)
    return built


def layered_edges(layers: int, width: int) -> list[tuple[str, str]]:
    """Each node of a layer feeds two nodes of the next: a DAG of layers * width nodes."""
    return [
        (f"model.p.n{layer}_{i}", f"model.p.n{layer + 1}_{(i + step) % width}")
        for layer in range(layers - 1)
        for i in range(width)
        for step in (0, 1)
    ]


def dbts_answer(graph: networkx.DiGraph) -> str | None:
    """What dbt-core 1.11's Linker.find_cycles returns, by its own search."""
    try:
        cycle = networkx.find_cycle(graph)
    except networkx.NetworkXNoCycle:
        return None
    return " --> ".join(edge[0] for edge in cycle)


def test_the_answers_are_dbts_own_with_and_without_a_cycle() -> None:
    install_fast_cycle_check()
    install_fast_cycle_check()  # idempotent: dbt's search stays underneath, once
    dag = linker(layered_edges(6, 5))
    cyclic = linker([*layered_edges(6, 5), ("model.p.n5_0", "model.p.n2_3")])
    assert dag.find_cycles() is None
    found = cyclic.find_cycles()
    assert found == dbts_answer(cyclic.graph)
    assert found is not None and "model.p.n2_3" in found.split(" --> ")
    assert getattr(Linker.find_cycles, "dbt_prefect_fast", False)
