"""Asset keys and names (model/translator.py), through the NodeCatalog that applies them."""

from __future__ import annotations

import logging
import pickle
from typing import Any

import pytest
from unit_manifest import (
    EPHEMERAL,
    FCT,
    SEED,
    STG,
    TEST_STG,
    UNIT_FCT,
    manifest,
    model,
    shop_entries,
    shop_manifest,
    singular_test,
    source,
)

from dbt_prefect.model.nodes import DbtNode, NodeCatalog
from dbt_prefect.model.translator import (
    DbtPrefectTranslator,
    InvalidAssetKey,
    asset_name,
    default_asset_key,
    validate_asset_key,
)


class WarehouseTranslator(DbtPrefectTranslator):
    """Keys every relation under one scheme, and names task runs its own way."""

    def __init__(self, scheme: str = "warehouse") -> None:
        self.scheme = scheme

    def task_run_name(self, node: DbtNode) -> str:
        return f"dbt {node.resource_type}: {node.name}"

    def asset_key(self, node: DbtNode, adapter_type: str) -> str:
        return f"{self.scheme}://{node.database}/{node.schema}/{node.alias}"


class BrokenTranslator(DbtPrefectTranslator):
    def asset_key(self, node: DbtNode, adapter_type: str) -> str:
        return f"my table {node.name}"


def test_default_key_is_the_official_rule_for_duckdb_and_postgres_quoting() -> None:
    assert default_asset_key("duckdb", '"dev"."main"."orders"') == "duckdb://dev/main/orders"
    assert default_asset_key("postgres", '"analytics"."public"."Orders"') == "postgres://analytics/public/Orders"
    # An unquoted relation (DuckDB file databases without a catalog, or a source identifier).
    assert default_asset_key("postgres", "analytics.public.orders") == "postgres://analytics/public/orders"


def test_default_key_drops_the_characters_prefect_restricts() -> None:
    relation = '"my db"."sch#ema"."or?d&e%r<s>[1]{2}|\\^`\'x\tend"'
    assert default_asset_key("postgres", relation) == "postgres://mydb/schema/orders12xend"
    # BigQuery's backtick quoting goes the same way.
    assert default_asset_key("bigquery", "`project`.`dataset`.`table`") == "bigquery://project/dataset/table"


def test_default_key_is_cut_at_prefects_512_characters() -> None:
    key = default_asset_key("duckdb", f'"dev"."main"."{"t" * 600}"')
    assert len(key) == 512
    assert key == "duckdb://dev/main/" + "t" * (512 - len("duckdb://dev/main/"))
    exactly = default_asset_key("duckdb", "dev.main." + "t" * (512 - len("duckdb://dev/main/")))
    assert len(exactly) == 512 and exactly.endswith("t")


def test_asset_name_is_the_relation_without_adapter_quoting() -> None:
    assert asset_name('"dev"."main"."orders"') == "dev.main.orders"
    assert asset_name("`project`.`dataset`.`table`") == "project.dataset.table"


def test_catalog_keys_relations_and_only_relations_by_the_manifests_adapter() -> None:
    catalog = NodeCatalog(shop_manifest(adapter_type="postgres"))
    keys = {uid: catalog.get(uid).asset_key for uid in (SEED, STG, EPHEMERAL, FCT, TEST_STG, UNIT_FCT)}
    assert keys == {
        SEED: "postgres://dev/main/raw_orders",
        STG: "postgres://dev/main/stg_orders",
        EPHEMERAL: None,
        FCT: "postgres://dev/main/fct_orders",
        TEST_STG: None,
        UNIT_FCT: None,
    }
    assert catalog.get(FCT).task_run_name == "model fct_orders"
    assert catalog.get(UNIT_FCT).task_run_name == "unit_test test_fct_orders_totals"
    assert catalog.get("model.shop.not_there") is None


def test_a_source_is_keyed_by_its_identifier() -> None:
    catalog = NodeCatalog(manifest(source("raw", "customers", "customers_v2")))
    node = catalog.get("source.shop.raw.customers")
    assert (node.asset_key, node.task_run_name) == ("duckdb://dev/raw/customers_v2", "source customers")


def test_meta_prefect_asset_key_overrides_the_default_key() -> None:
    catalog = NodeCatalog(shop_manifest(fct_meta={"prefect": {"asset_key": "snowflake://prod/marts/fct_orders"}}))
    assert catalog.get(FCT).asset_key == "snowflake://prod/marts/fct_orders"
    assert catalog.get(STG).asset_key == "duckdb://dev/main/stg_orders"


def test_meta_prefect_enable_assets_false_means_no_asset_key() -> None:
    catalog = NodeCatalog(shop_manifest(fct_meta={"prefect": {"enable_assets": False, "asset_key": "x://y"}}))
    assert catalog.get(FCT).asset_key is None


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ("fct_orders", "it has no scheme such as `bigquery://`"),
        ("://dev/fct_orders", "it has no scheme such as `bigquery://`"),
        ("s3://bucket/my table", "it contains ' ', which Prefect does not allow"),
        ("s3://bucket/" + "k" * 501, "it is longer than 512 characters"),
    ],
)
def test_an_invalid_override_falls_back_to_the_default_key_with_a_warning_naming_the_node(
    override: str, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = NodeCatalog(shop_manifest(fct_meta={"prefect": {"asset_key": override}}))
    with caplog.at_level(logging.WARNING, logger="dbt_prefect"):
        assert catalog.get(FCT).asset_key == "duckdb://dev/main/fct_orders"
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "dbt_prefect",
            "WARNING",
            f"dbt-prefect uses the default asset key instead: asset key {override!r} of model fct_orders "
            f"is not valid: {problem} (fix `meta.prefect.asset_key` or DbtPrefectTranslator.asset_key)",
        )
    ]


def test_validate_asset_key_keeps_a_valid_key_and_names_the_restricted_characters_of_a_bad_one() -> None:
    fct = NodeCatalog(shop_manifest()).get(FCT)
    assert validate_asset_key("s3://bucket/" + "k" * 500, fct) == "s3://bucket/" + "k" * 500
    with pytest.raises(InvalidAssetKey, match=r"of model fct_orders is not valid: it contains '#', '\?'"):
        validate_asset_key("s3://bucket/a#b?c", fct)


def test_a_custom_translator_changes_keys_and_task_run_names() -> None:
    catalog = NodeCatalog(shop_manifest(), WarehouseTranslator())
    fct, test = catalog.get(FCT), catalog.get(TEST_STG)
    assert (fct.asset_key, fct.task_run_name) == ("warehouse://dev/main/fct_orders", "dbt model: fct_orders")
    assert (test.asset_key, test.task_run_name) == (None, "dbt test: not_null_stg_orders_order_id")
    bigquery = NodeCatalog(shop_manifest(adapter_type="bigquery"), WarehouseTranslator("bigquery"))
    assert bigquery.get(STG).asset_key == "bigquery://dev/main/stg_orders"


def test_a_custom_translator_returning_an_invalid_key_falls_back_too(caplog: pytest.LogCaptureFixture) -> None:
    catalog = NodeCatalog(shop_manifest(), BrokenTranslator())
    with caplog.at_level(logging.WARNING, logger="dbt_prefect"):
        assert catalog.get(STG).asset_key == "duckdb://dev/main/stg_orders"
    assert "asset key 'my table stg_orders' of model stg_orders is not valid" in caplog.records[0].getMessage()
    assert len(caplog.records) == 1


def test_a_translator_subclass_survives_pickling_with_its_state() -> None:
    restored = pickle.loads(pickle.dumps(WarehouseTranslator("lake")))
    assert type(restored) is WarehouseTranslator
    catalog = NodeCatalog(shop_manifest(), restored)
    assert catalog.get(FCT).asset_key == "lake://dev/main/fct_orders"
    assert type(pickle.loads(pickle.dumps(DbtPrefectTranslator()))) is DbtPrefectTranslator


def test_asset_properties_name_describe_and_own_the_relation() -> None:
    node = model("orders", meta={"owner": ["analytics", "", "sales"]}, description="One row per order.")
    catalog = NodeCatalog(manifest(node))
    record = catalog.get("model.shop.orders")
    translator = DbtPrefectTranslator()
    assert translator.asset_properties(record) == {
        "name": "dev.main.orders", "description": "One row per order.", "owners": ["analytics", "sales"],
    }
    assert translator.asset_properties(record, "select 1\n")["description"] == (
        "One row per order.\n\n### Compiled code\n```sql\nselect 1\n```"
    )
    bare = catalog.named(DbtNode(unique_id="model.shop.bare", name="bare", resource_type="model"))
    assert translator.asset_properties(bare) == {"name": "bare"}


def test_compiled_code_that_does_not_fit_prefects_limit_is_left_out_whole() -> None:
    record = NodeCatalog(manifest(model("orders", description="Orders."))).get("model.shop.orders")
    description = DbtPrefectTranslator().asset_properties(record, "select 1 -- " + "x" * 3000)["description"]
    assert description == (
        "Orders.\n\n_Compiled code omitted: it does not fit Prefect's 2,500-character description limit._"
    )
    long = NodeCatalog(manifest(model("orders", description="d" * 3000))).get("model.shop.orders")
    cut = DbtPrefectTranslator().asset_properties(long)["description"]
    assert (len(cut), cut[-14:]) == (2500, "d… (truncated)")


def test_materialization_metadata_is_what_was_collected_by_default() -> None:
    metadata: dict[str, Any] = {"rows_affected": 3, "row_count": 10}
    payload = DbtPrefectTranslator().materialization_metadata(NodeCatalog(shop_manifest()).get(FCT), metadata)
    assert payload == {"rows_affected": 3, "row_count": 10}
    assert payload is not metadata


def test_checked_assets_are_the_attached_model_else_every_relation_selected_from() -> None:
    catalog = NodeCatalog(manifest(*shop_entries(), singular_test("orders_match", [FCT, STG, FCT, EPHEMERAL])))
    translator = catalog.translator
    checked = {
        uid: [n.unique_id for n in translator.checked_assets(catalog.get(uid), catalog)]
        for uid in (TEST_STG, UNIT_FCT, "test.shop.orders_match")
    }
    assert checked == {TEST_STG: [STG], UNIT_FCT: [FCT], "test.shop.orders_match": [FCT, STG]}
