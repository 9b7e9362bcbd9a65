"""Why a node was skipped (statuses.skip_reason), from its parents' dbt statuses."""

from __future__ import annotations

from unit_manifest import EPHEMERAL, FCT, SEED, STG, TEST_STG, manifest, model, seed, shop_manifest

from dbt_prefect.model.nodes import NodeCatalog
from dbt_prefect.model.statuses import skip_reason


def reason(catalog: NodeCatalog, unique_id: str, statuses: dict[str, str]) -> str:
    return skip_reason(catalog.parents(catalog.get(unique_id)), statuses.get)


def test_a_node_whose_parent_failed_names_the_parent_and_its_status() -> None:
    catalog = NodeCatalog(shop_manifest())
    assert reason(catalog, STG, {SEED: "error"}) == "Skipped because seed raw_orders finished with status error"
    assert reason(catalog, TEST_STG, {STG: "partial success"}) == (
        "Skipped because model stg_orders finished with status partial success"
    )
    assert reason(catalog, TEST_STG, {STG: "runtime error"}) == (
        "Skipped because model stg_orders finished with status runtime error"
    )


def test_a_node_whose_parent_was_skipped_says_so() -> None:
    catalog = NodeCatalog(shop_manifest())
    assert reason(catalog, STG, {SEED: "skipped"}) == "Skipped because seed raw_orders was skipped"


def test_a_node_whose_parents_are_unknown_or_fine_is_skipped_by_dbt() -> None:
    catalog = NodeCatalog(shop_manifest())
    assert reason(catalog, STG, {}) == "Skipped by dbt"
    for fine in ("success", "pass", "warn", "no-op"):
        assert reason(catalog, STG, {SEED: fine}) == "Skipped by dbt", fine
    # A node without parents at all.
    assert reason(catalog, SEED, {}) == "Skipped by dbt"


def test_an_ephemeral_parent_is_looked_through_to_the_model_that_failed() -> None:
    catalog = NodeCatalog(shop_manifest())
    assert [p.unique_id for p in catalog.parents(catalog.get(FCT))] == [STG]
    assert reason(catalog, FCT, {STG: "error"}) == "Skipped because model stg_orders finished with status error"
    assert reason(catalog, FCT, {STG: "skipped"}) == "Skipped because model stg_orders was skipped"
    # The ephemeral model itself has no status of its own; a status given for it is ignored.
    assert reason(catalog, FCT, {EPHEMERAL: "error"}) == "Skipped by dbt"


def test_the_first_parent_in_dbts_order_that_failed_or_was_skipped_is_named() -> None:
    entries = [
        seed("raw_a"),
        seed("raw_b"),
        model("eph_b", ["seed.shop.raw_b"], materialized="ephemeral"),
        model("joined", ["seed.shop.raw_a", "model.shop.eph_b", "seed.shop.raw_a"]),
    ]
    catalog = NodeCatalog(manifest(*entries))
    joined = "model.shop.joined"
    assert [p.unique_id for p in catalog.parents(catalog.get(joined))] == ["seed.shop.raw_a", "seed.shop.raw_b"]
    assert reason(catalog, joined, {"seed.shop.raw_a": "success", "seed.shop.raw_b": "error"}) == (
        "Skipped because seed raw_b finished with status error"
    )
    assert reason(catalog, joined, {"seed.shop.raw_a": "skipped", "seed.shop.raw_b": "error"}) == (
        "Skipped because seed raw_a was skipped"
    )
