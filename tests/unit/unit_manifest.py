"""Small real dbt Manifests, built from dbt's own node classes without running dbt.

The shop DAG used across the unit tests:

    seed raw_orders -> model stg_orders (view) -> model int_orders (ephemeral) -> model fct_orders (table)

with a generic test on stg_orders, one on fct_orders, and a unit test of fct_orders.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from dbt.artifacts.resources import (
    DependsOn,
    FileHash,
    ModelConfig,
    SeedConfig,
    SourceConfig,
    TestConfig,
)
from dbt.artifacts.resources.types import NodeType
from dbt.artifacts.resources.v1.unit_test_definition import UnitTestOutputFixture
from dbt.contracts.graph.manifest import Manifest, ManifestMetadata
from dbt.contracts.graph.nodes import (
    GenericTestNode,
    ModelNode,
    SeedNode,
    SingularTestNode,
    SourceDefinition,
    UnitTestDefinition,
)

PACKAGE = "shop"
DATABASE = "dev"
SCHEMA = "main"

SEED = "seed.shop.raw_orders"
STG = "model.shop.stg_orders"
EPHEMERAL = "model.shop.int_orders"
FCT = "model.shop.fct_orders"
TEST_STG = "test.shop.not_null_stg_orders_order_id.1a2b3c"
TEST_FCT = "test.shop.unique_fct_orders_order_id.4d5e6f"
UNIT_FCT = "unit_test.shop.fct_orders.test_fct_orders_totals"
SHOP = (SEED, STG, EPHEMERAL, FCT, TEST_STG, TEST_FCT, UNIT_FCT)


def _relation(database: str, schema: str, alias: str) -> str:
    return f'"{database}"."{schema}"."{alias}"'


def model(
    name: str,
    depends_on: Iterable[str] = (),
    materialized: str = "table",
    meta: Optional[Mapping[str, Any]] = None,
    description: str = "",
    relation_name: Optional[str] = None,
) -> ModelNode:
    ephemeral = materialized == "ephemeral"
    return ModelNode(
        database=DATABASE,
        schema=SCHEMA,
        name=name,
        alias=name,
        resource_type=NodeType.Model,
        unique_id=f"model.{PACKAGE}.{name}",
        fqn=[PACKAGE, name],
        package_name=PACKAGE,
        path=f"{name}.sql",
        original_file_path=f"models/{name}.sql",
        checksum=FileHash.empty(),
        description=description,
        relation_name=None if ephemeral else (relation_name or _relation(DATABASE, SCHEMA, name)),
        depends_on=DependsOn(nodes=list(depends_on)),
        config=ModelConfig(materialized=materialized, meta=dict(meta or {})),
    )


def seed(name: str) -> SeedNode:
    return SeedNode(
        database=DATABASE,
        schema=SCHEMA,
        name=name,
        alias=name,
        resource_type=NodeType.Seed,
        unique_id=f"seed.{PACKAGE}.{name}",
        fqn=[PACKAGE, name],
        package_name=PACKAGE,
        path=f"{name}.csv",
        original_file_path=f"seeds/{name}.csv",
        checksum=FileHash.empty(),
        relation_name=_relation(DATABASE, SCHEMA, name),
        config=SeedConfig(),
    )


def source(source_name: str, name: str, identifier: str, source_meta: Optional[Mapping[str, Any]] = None) -> SourceDefinition:
    return SourceDefinition(
        database=DATABASE,
        schema=source_name,
        name=name,
        identifier=identifier,
        source_name=source_name,
        source_description="",
        loader="",
        resource_type=NodeType.Source,
        unique_id=f"source.{PACKAGE}.{source_name}.{name}",
        fqn=[PACKAGE, source_name, name],
        package_name=PACKAGE,
        path="models/sources.yml",
        original_file_path="models/sources.yml",
        relation_name=_relation(DATABASE, source_name, identifier),
        source_meta=dict(source_meta or {}),
        config=SourceConfig(),
    )


def generic_test(unique_id: str, attached_node: str, depends_on: Iterable[str]) -> GenericTestNode:
    name = unique_id.split(".")[2]
    return GenericTestNode(
        database=DATABASE,
        schema=f"{SCHEMA}_dbt_test__audit",
        name=name,
        alias=name,
        resource_type=NodeType.Test,
        unique_id=unique_id,
        fqn=[PACKAGE, name],
        package_name=PACKAGE,
        path=f"{name}.sql",
        original_file_path="models/schema.yml",
        checksum=FileHash.empty(),
        attached_node=attached_node,
        depends_on=DependsOn(nodes=list(depends_on)),
        config=TestConfig(),
    )


def singular_test(name: str, depends_on: Iterable[str]) -> SingularTestNode:
    return SingularTestNode(
        database=DATABASE,
        schema=f"{SCHEMA}_dbt_test__audit",
        name=name,
        alias=name,
        resource_type=NodeType.Test,
        unique_id=f"test.{PACKAGE}.{name}",
        fqn=[PACKAGE, name],
        package_name=PACKAGE,
        path=f"{name}.sql",
        original_file_path=f"tests/{name}.sql",
        checksum=FileHash.empty(),
        depends_on=DependsOn(nodes=list(depends_on)),
        config=TestConfig(),
    )


def unit_test(unique_id: str, model_unique_id: str) -> UnitTestDefinition:
    name = unique_id.split(".")[-1]
    return UnitTestDefinition(
        model=model_unique_id.split(".")[-1],
        given=[],
        expect=UnitTestOutputFixture(rows=[]),
        name=name,
        resource_type=NodeType.Unit,
        unique_id=unique_id,
        fqn=[PACKAGE, model_unique_id.split(".")[-1], name],
        package_name=PACKAGE,
        path="models/schema.yml",
        original_file_path="models/schema.yml",
        depends_on=DependsOn(nodes=[model_unique_id]),
    )


def manifest(*entries: Any, adapter_type: str = "duckdb") -> Manifest:
    by_collection: dict[str, dict[str, Any]] = {"nodes": {}, "sources": {}, "unit_tests": {}}
    for entry in entries:
        collection = {NodeType.Source: "sources", NodeType.Unit: "unit_tests"}.get(entry.resource_type, "nodes")
        by_collection[collection][entry.unique_id] = entry
    return Manifest(**by_collection, metadata=ManifestMetadata(adapter_type=adapter_type))


def shop_entries(fct_meta: Optional[Mapping[str, Any]] = None) -> list[Any]:
    return [
        seed("raw_orders"),
        model("stg_orders", [SEED], materialized="view"),
        model("int_orders", [STG], materialized="ephemeral"),
        model("fct_orders", [EPHEMERAL], meta=fct_meta),
        generic_test(TEST_STG, STG, [STG]),
        generic_test(TEST_FCT, FCT, [FCT]),
        unit_test(UNIT_FCT, FCT),
    ]


def shop_manifest(adapter_type: str = "duckdb", fct_meta: Optional[Mapping[str, Any]] = None) -> Manifest:
    return manifest(*shop_entries(fct_meta), adapter_type=adapter_type)
