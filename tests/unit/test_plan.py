"""The orchestrator's plan (orchestrator/plan.py) on the small shop DAG.

seed raw_orders -> stg_orders (view) -> int_orders (ephemeral) -> fct_orders (table)
tests: not_null on stg_orders, unique on fct_orders; unit test of fct_orders
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from unit_manifest import (
    EPHEMERAL,
    FCT,
    SEED,
    SHOP,
    STG,
    TEST_FCT,
    TEST_STG,
    UNIT_FCT,
    generic_test,
    manifest,
    model,
    shop_entries,
    shop_manifest,
)

from dbt_prefect.errors import OrchestratorUsageError
from dbt_prefect.model.nodes import NodeCatalog
from dbt_prefect.orchestrator.plan import NodeGraph, PlannedNode, build_plan, preview


def shop_plan(test_strategy: str, selected: tuple[str, ...] = SHOP) -> NodeGraph:
    return build_plan(NodeCatalog(shop_manifest()), selected, test_strategy)


def bare(plan: NodeGraph) -> dict[str, PlannedNode]:
    """The plan's nodes without their display fields (materialization, tested model)."""
    return {uid: replace(n, materialization=None, attached_to=None) for uid, n in plan.by_id().items()}


def waves(plan: NodeGraph) -> list[list[str]]:
    """Nodes grouped by how many waits separate them from a root (what can run together)."""
    depth: dict[str, int] = {}
    for planned in plan.nodes:  # plan order puts every node after what it waits for
        depth[planned.unique_id] = 1 + max((depth[w] for w in planned.waits_for), default=-1)
    grouped: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for uid, level in depth.items():
        grouped[level].append(uid)
    return grouped


def test_immediate_runs_each_models_tests_right_after_it_and_unit_tests_before_it() -> None:
    plan = shop_plan("immediate")
    assert [n.unique_id for n in plan.nodes] == [SEED, STG, TEST_STG, UNIT_FCT, FCT, TEST_FCT]
    assert waves(plan) == [[SEED], [STG], [TEST_STG], [UNIT_FCT], [FCT], [TEST_FCT]]
    assert bare(plan) == {
        SEED: PlannedNode(SEED, "seed raw_orders", "seed", parents=(), waits_for=()),
        STG: PlannedNode(STG, "model stg_orders", "model", parents=(SEED,), waits_for=(SEED,)),
        TEST_STG: PlannedNode(TEST_STG, "test not_null_stg_orders_order_id", "test", parents=(STG,), waits_for=(STG,)),
        # A unit test runs before its model, after what gates the model: its parents (the
        # ephemeral folded away) and the tests that gate it.
        UNIT_FCT: PlannedNode(
            UNIT_FCT,
            "unit_test test_fct_orders_totals",
            "unit_test",
            parents=(STG, TEST_STG),
            waits_for=(STG, TEST_STG),
        ),
        # The model waits for its parent, the parent's test and its own unit test; each of
        # them decides (as a parent) whether it runs, as in dbt build.
        FCT: PlannedNode(
            FCT, "model fct_orders", "model", parents=(STG, TEST_STG, UNIT_FCT), waits_for=(STG, TEST_STG, UNIT_FCT)
        ),
        TEST_FCT: PlannedNode(TEST_FCT, "test unique_fct_orders_order_id", "test", parents=(FCT,), waits_for=(FCT,)),
    }
    assert plan.hook_types == ()


def test_deferred_runs_every_test_after_every_model_and_seed() -> None:
    plan = shop_plan("deferred")
    assert [n.unique_id for n in plan.nodes] == [SEED, STG, FCT, TEST_STG, TEST_FCT, UNIT_FCT]
    assert waves(plan) == [[SEED], [STG], [FCT], [TEST_STG, TEST_FCT, UNIT_FCT]]
    by_id = bare(plan)
    assert by_id[FCT] == PlannedNode(FCT, "model fct_orders", "model", parents=(STG,), waits_for=(STG,))
    for test, parents in ((TEST_STG, (STG,)), (TEST_FCT, (FCT,)), (UNIT_FCT, (STG,))):
        assert (by_id[test].parents, by_id[test].waits_for) == (parents, (FCT, STG, SEED)), test


def test_skip_plans_no_tests_at_all() -> None:
    plan = shop_plan("skip")
    assert [(n.unique_id, n.parents, n.waits_for) for n in plan.nodes] == [
        (SEED, (), ()),
        (STG, (SEED,), (SEED,)),
        (FCT, (STG,), (STG,)),
    ]


@pytest.mark.parametrize("test_strategy", ["immediate", "deferred", "skip"])
def test_ephemeral_models_are_never_planned_and_their_parents_become_their_childrens(test_strategy: str) -> None:
    plan = shop_plan(test_strategy)
    assert EPHEMERAL not in plan.by_id()
    assert all(EPHEMERAL not in n.parents and EPHEMERAL not in n.waits_for for n in plan.nodes)
    assert plan.by_id()[FCT].parents[0] == STG


def test_only_selected_nodes_are_planned_and_unselected_parents_are_not_waited_for() -> None:
    plan = shop_plan("immediate", (FCT, TEST_FCT, UNIT_FCT, FCT, "model.shop.not_in_manifest"))
    assert [(n.unique_id, n.parents, n.waits_for) for n in plan.nodes] == [
        (UNIT_FCT, (), ()),
        (FCT, (UNIT_FCT,), (UNIT_FCT,)),
        (TEST_FCT, (FCT,), (FCT,)),
    ]


def test_a_unit_test_without_its_model_selected_runs_on_its_own() -> None:
    plan = shop_plan("immediate", (SEED, STG, UNIT_FCT))
    assert [(n.unique_id, n.parents, n.waits_for) for n in plan.nodes] == [
        (SEED, (), ()),
        (UNIT_FCT, (), ()),
        (STG, (SEED,), (SEED,)),
    ]


def test_immediate_tests_gate_the_first_nodes_downstream_and_the_rest_through_them() -> None:
    entries = [*shop_entries(), model("report", [FCT])]
    plan = build_plan(NodeCatalog(manifest(*entries)), [*SHOP, "model.shop.report"], "immediate")
    report = plan.by_id()["model.shop.report"]
    # report waits for fct_orders' test, not for stg_orders' (fct_orders already waited for it).
    assert (report.parents, report.waits_for) == ((FCT, TEST_FCT), (FCT, TEST_FCT))
    assert [n.unique_id for n in plan.nodes][-2:] == [TEST_FCT, "model.shop.report"]


def test_a_test_of_two_models_gates_only_nodes_downstream_of_both() -> None:
    relationships = "test.shop.relationships_fct_stg.7a8b9c"
    entries = [*shop_entries(), generic_test(relationships, FCT, [FCT, STG]), model("report", [FCT])]
    plan = build_plan(NodeCatalog(manifest(*entries)), [*SHOP, relationships, "model.shop.report"], "immediate")
    by_id = plan.by_id()
    assert (by_id[relationships].parents, by_id[relationships].waits_for) == ((FCT, STG), (FCT, STG))
    assert by_id[FCT].waits_for == (STG, TEST_STG, UNIT_FCT)
    assert by_id["model.shop.report"].waits_for == (FCT, relationships, TEST_FCT)


def test_a_test_of_two_branches_gates_the_first_node_below_both_not_the_nodes_on_one_branch() -> None:
    # a -> left -> joined <- right <- b, and joined -> final; a test of a and b.
    ids = {name: f"model.shop.{name}" for name in ("a", "b", "left", "right", "joined", "final")}
    both = "test.shop.relationships_a_b.1f2e3d"
    entries = [
        model("a"),
        model("b"),
        model("left", [ids["a"]]),
        model("right", [ids["b"]]),
        model("joined", [ids["left"], ids["right"]]),
        model("final", [ids["joined"]]),
        generic_test(both, ids["a"], [ids["a"], ids["b"]]),
    ]
    plan = build_plan(NodeCatalog(manifest(*entries)), [*ids.values(), both], "immediate")
    gated = sorted(uid for uid, node in plan.by_id().items() if both in node.waits_for)
    assert gated == [ids["joined"]]


def test_a_long_chain_of_tested_models_plans_every_gate() -> None:
    # Deep graphs: the plan's searches are iterative, and each model's test gates its child.
    names = [f"m{i:04d}" for i in range(3000)]
    entries: list = [model(names[0])]
    entries += [model(name, [f"model.shop.{names[i]}"]) for i, name in enumerate(names[1:])]
    tests = [f"test.shop.not_null_{name}.{i:06x}" for i, name in enumerate(names)]
    entries += [generic_test(test, f"model.shop.{name}", [f"model.shop.{name}"]) for test, name in zip(tests, names)]
    plan = build_plan(NodeCatalog(manifest(*entries)), [*(f"model.shop.{n}" for n in names), *tests], "immediate")
    by_id = plan.by_id()
    assert all(
        by_id[f"model.shop.{child}"].waits_for == (f"model.shop.{parent}", test)
        for parent, child, test in zip(names, names[1:], tests)
    )
    assert len(plan.nodes) == 6000


def test_immediate_a_failing_test_skips_the_models_it_gates_as_dbt_build_does() -> None:
    # run_node (orchestrator/worker.py) skips a node when one of its `parents` failed or
    # was skipped; dbt build skips every descendant of a failed test, test edges included,
    # and a skipped model's unit tests.
    by_id = shop_plan("immediate").by_id()
    assert by_id[FCT].parents == (STG, TEST_STG, UNIT_FCT)
    assert by_id[UNIT_FCT].parents == (STG, TEST_STG)


def test_an_unknown_test_strategy_is_refused_with_the_choices() -> None:
    with pytest.raises(OrchestratorUsageError) as raised:
        shop_plan("eager")
    assert str(raised.value) == "test_strategy must be one of immediate, deferred, skip, not 'eager'"


def test_a_cycle_is_refused_naming_its_nodes() -> None:
    entries = [model("a", ["model.shop.b"]), model("b", ["model.shop.a"]), model("c")]
    with pytest.raises(OrchestratorUsageError) as raised:
        build_plan(NodeCatalog(manifest(*entries)), ["model.shop.a", "model.shop.b", "model.shop.c"], "skip")
    assert str(raised.value) == "the dbt graph has a cycle through ['model.shop.a', 'model.shop.b']"


def ids(waves: list[list[PlannedNode]]) -> list[list[str]]:
    return [[n.unique_id for n in wave] for wave in waves]


def test_waves_put_each_node_one_wave_after_what_it_waits_for() -> None:
    plan = shop_plan("immediate")
    assert ids(plan.waves()) == waves(plan)


def test_for_one_dbt_build_per_wave_tests_ride_with_what_they_test() -> None:
    # dbt build runs a unit test only together with the model it tests, just before it,
    # and a data test right after what it tests: the nodes it gates are in later waves.
    assert ids(shop_plan("immediate").waves(for_dbt_build=True)) == [
        [SEED], [STG, TEST_STG], [UNIT_FCT, FCT, TEST_FCT]
    ]
    # Deferred: every data test after every model, in one last wave.
    assert ids(shop_plan("deferred").waves(for_dbt_build=True)) == [
        [SEED], [STG], [UNIT_FCT, FCT], [TEST_STG, TEST_FCT]
    ]


def test_the_build_plan_reads_like_the_official_one() -> None:
    plan = preview(shop_plan("immediate"), {TEST_FCT: "upstream source shop.raw is stale"}, per_wave=True)
    assert (plan.node_count, plan.estimated_parallelism, len(plan.waves)) == (5, 2, 3)
    assert str(plan) == "\n".join(
        [
            "BuildPlan: 5 node(s) in 3 wave(s)  |  max parallelism = 2",
            "",
            "  Wave 0 (1 node(s)):",
            f"    - {SEED} [seed, seed]",
            "  Wave 1 (2 node(s)):",
            f"    - {STG} [model, view]",
            f"    - {TEST_STG} [test]",
            "  Wave 2 (2 node(s)):",
            f"    - {UNIT_FCT} [unit_test]",
            f"    - {FCT} [model, table]",
            "",
            "  Skipped (1):",
            f"    - {TEST_FCT}: upstream source shop.raw is stale",
        ]
    )
    assert plan.skipped_nodes == {TEST_FCT: {"status": "skipped", "reason": "upstream source shop.raw is stale"}}
    with_cache = preview(shop_plan("skip"), {}, per_wave=False, cache_predictions={SEED: "hit", STG: "miss"})
    assert str(with_cache).endswith("\n\n  Cache: 1 hit(s), 1 miss(es), 0 excluded")
    assert f"    - {SEED} [seed, seed] (cache: hit)" in str(with_cache)
