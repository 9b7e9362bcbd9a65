"""subset_graph (_compat/dbt.py) gives what dbt's own Graph.get_subset_graph gives: the same
nodes with their attributes, the same edges with theirs, for waves and for any selection."""

from __future__ import annotations

import random

import networkx
import pytest
from dbt.graph.graph import Graph

from dbt_prefect._compat.dbt import depth_levels, subset_graph


def random_dag(seed: int, nodes: int, edge_chance: float) -> networkx.DiGraph:
    """Edges only from lower to higher numbers, so no cycle; a third of them marked as
    dbt marks the edges it adds from tests."""
    rng = random.Random(seed)
    graph = networkx.DiGraph()
    for number in range(nodes):
        graph.add_node(f"model.p.n{number}", position=number)
    for child in range(nodes):
        for parent in range(child):
            if rng.random() < edge_chance:
                attributes = {"edge_type": "parent_test"} if rng.random() < 0.3 else {}
                graph.add_edge(f"model.p.n{parent}", f"model.p.n{child}", **attributes)
    return graph


def dbts_subset(graph: networkx.DiGraph, selected: set[str]) -> networkx.DiGraph:
    return Graph(graph).get_subset_graph(selected).graph


def assert_same(ours: networkx.DiGraph, theirs: networkx.DiGraph) -> None:
    assert dict(ours.nodes(data=True)) == dict(theirs.nodes(data=True))
    assert {(a, b): data for a, b, data in ours.edges(data=True)} == {
        (a, b): data for a, b, data in theirs.edges(data=True)
    }


@pytest.mark.parametrize("seed", range(40))
def test_any_selection_gives_dbts_subgraph(seed: int) -> None:
    rng = random.Random(seed)
    graph = random_dag(seed, nodes=rng.randint(2, 40), edge_chance=rng.choice([0.05, 0.15, 0.4]))
    selected = {node for node in graph if rng.random() < 0.4} or {next(iter(graph))}
    expected = dbts_subset(graph, selected)
    assert_same(subset_graph(graph, depth_levels(graph), selected), expected)


@pytest.mark.parametrize("seed", range(20))
def test_each_wave_gives_dbts_subgraph(seed: int) -> None:
    graph = random_dag(seed, nodes=60, edge_chance=0.08)
    levels = depth_levels(graph)
    waves: dict[int, set[str]] = {}
    for node, depth in levels.items():
        waves.setdefault(depth, set()).add(node)
    assert len(waves) > 2
    for wave in waves.values():
        ours = subset_graph(graph, levels, wave)
        assert_same(ours, dbts_subset(graph, wave))
        assert ours.number_of_edges() == 0  # a wave's nodes never depend on each other


def test_a_path_through_unselected_nodes_becomes_an_edge_without_attributes() -> None:
    graph = networkx.DiGraph()
    graph.add_edge("a", "x", edge_type="parent_test")
    graph.add_edge("x", "b")
    graph.add_edge("a", "c", edge_type="parent_test")
    graph.add_edge("c", "y")
    ours = subset_graph(graph, depth_levels(graph), {"a", "b", "c"})
    assert sorted(ours.edges(data=True)) == [("a", "b", {}), ("a", "c", {"edge_type": "parent_test"})]
    assert_same(ours, dbts_subset(graph, {"a", "b", "c"}))


def test_a_node_outside_the_graph_is_left_to_dbts_own_error() -> None:
    graph = random_dag(1, nodes=5, edge_chance=0.5)
    assert subset_graph(graph, depth_levels(graph), {"model.p.n1", "model.p.missing"}) is None
    with pytest.raises(ValueError, match="Couldn't find model 'model.p.missing'"):
        dbts_subset(graph, {"model.p.n1", "model.p.missing"})


def test_depth_is_one_more_than_the_deepest_parent() -> None:
    graph = networkx.DiGraph([("a", "b"), ("b", "c"), ("a", "c"), ("d", "c")])
    assert depth_levels(graph) == {"a": 0, "d": 0, "b": 1, "c": 2}
