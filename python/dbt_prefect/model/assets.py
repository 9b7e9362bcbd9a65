"""Prefect assets for dbt relations: the asset of a node, its lineage and its metadata.

Keys, names, descriptions and owners come from the translator (translator.py), whose
defaults follow the official prefect-dbt integration, so switching keeps asset history.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.json_format import MessageToDict
from prefect.assets import Asset, AssetProperties

from dbt_prefect.model.nodes import DbtNode, NodeCatalog

# Who materializes dbt's assets, as the official integration names it.
MATERIALIZED_BY = "dbt"


def node_asset(node: DbtNode, catalog: NodeCatalog, compiled_code: str | None = None) -> Asset:
    """The Prefect asset of a node that is one (``node.asset_key`` is set)."""
    assert node.asset_key, "only relations are assets"
    properties = catalog.translator.asset_properties(node, compiled_code)
    return Asset(key=node.asset_key, properties=AssetProperties(**properties))


def upstream_asset_nodes(node: DbtNode, catalog: NodeCatalog) -> Iterable[DbtNode]:
    """Parents that are assets themselves: through ephemerals, without relation-less sources
    or parents whose assets are turned off."""
    return [parent for parent in catalog.parents(node) if parent.assets_enabled]


def materialization_metadata(node_info: Any, run_result: Any, message: str) -> dict[str, Any]:
    """What dbt reported about the run: node_info, execution_time, rows_affected, message.

    A node dbt never finished (closed after dbt returned) has neither: its message only."""
    if node_info is None or run_result is None:
        return {"message": message}
    metadata = MessageToDict(node_info, preserving_proto_field_name=True)
    metadata.pop("node_checksum", None)
    metadata["execution_time"] = run_result.execution_time
    adapter_response = MessageToDict(run_result.adapter_response) if run_result.adapter_response else {}
    rows = adapter_response.get("rows_affected")
    if rows is not None:
        metadata["rows_affected"] = int(rows)
    metadata["message"] = message
    return metadata
