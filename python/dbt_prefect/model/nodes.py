"""One immutable record per dbt node, and a catalog that builds them on demand.

Everything Prefect sees about a node (task-run name, asset key, upstream assets,
metadata) is derived from one ``DbtNode``. Records are built lazily, once per node per
invocation, from the manifest dbt already parsed; nothing here scans the whole manifest.
The catalog names each record once, through the translator (translator.py).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.json_format import MessageToDict

from dbt_prefect.model.metadata import WarehouseMetadata
from dbt_prefect.model.package_contract import (
    CONFIG_COLUMNS,
    CONFIG_COUNT_VIEW_ROWS,
    CONFIG_ENABLE_ASSETS,
    CONFIG_ROW_COUNT,
    META_KEY,
)
from dbt_prefect.model.translator import DbtPrefectTranslator, InvalidAssetKey, default_asset_key, validate_asset_key

_logger = logging.getLogger("dbt_prefect")

# Resource types that are relations in the warehouse and can therefore be assets.
ASSET_RESOURCE_TYPES = frozenset({"model", "seed", "snapshot", "source"})

# The one documented default set of `meta.prefect`; the dbt macro
# `dbt_prefect.prefect_config` carries the same defaults.
PREFECT_CONFIG_DEFAULTS: Mapping[str, Any] = {
    CONFIG_ENABLE_ASSETS: True,
    # Read by the dbt package's collect_metadata post-hook (see metadata.py).
    CONFIG_ROW_COUNT: True,
    CONFIG_COUNT_VIEW_ROWS: False,
    CONFIG_COLUMNS: True,
}


@dataclass(frozen=True, slots=True)
class DbtNode:
    unique_id: str
    name: str
    resource_type: str
    materialized: str | None = None
    relation_name: str | None = None
    database: str | None = None
    schema: str | None = None
    alias: str | None = None
    original_file_path: str | None = None
    description: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)
    prefect_config: Mapping[str, Any] = field(default_factory=lambda: dict(PREFECT_CONFIG_DEFAULTS))
    depends_on: tuple[str, ...] = ()
    # The model a test or unit test checks, when dbt records one.
    attached_node: str | None = None
    # Set by NodeCatalog through the translator: the task run's name, and the asset key
    # of a node that is an asset.
    task_run_name: str = ""
    asset_key: str | None = None

    @property
    def is_ephemeral(self) -> bool:
        return self.materialized == "ephemeral"

    @property
    def owners(self) -> tuple[str, ...]:
        owner = self.meta.get("owner")
        if owner is None or owner == "":
            return ()
        if isinstance(owner, (list, tuple)):
            return tuple(str(o) for o in owner if o not in (None, ""))
        return (str(owner),)

    @property
    def assets_enabled(self) -> bool:
        return (
            self.resource_type in ASSET_RESOURCE_TYPES
            and bool(self.relation_name)
            and not self.is_ephemeral
            and bool(self.prefect_config.get(CONFIG_ENABLE_ASSETS, True))
        )


@dataclass
class FinishedNode:
    """What dbt reported for one node, kept for assets, summaries and skip reasons."""

    node: DbtNode
    status: str
    message: str
    task_run_id: uuid.UUID | None
    node_info: Any
    run_result: Any
    # Row count and columns collect_metadata read from the warehouse, when it ran.
    metadata: WarehouseMetadata | None = None


def merge_prefect_config(*layers: Any) -> dict[str, Any]:
    """Defaults, then each `meta.prefect` layer from the least to the most specific."""
    merged = dict(PREFECT_CONFIG_DEFAULTS)
    for layer in layers:
        if isinstance(layer, Mapping):
            merged.update(layer)
    return merged


def _meta_prefect(meta: Any) -> Any:
    return meta.get(META_KEY) if isinstance(meta, Mapping) else None


def _node_from_manifest_entry(entry: Any) -> DbtNode:
    resource_type = getattr(entry.resource_type, "value", entry.resource_type)
    config = getattr(entry, "config", None)
    config_meta = getattr(config, "meta", None) or {}
    own_meta = getattr(entry, "meta", None) or {}
    # Layers, least specific first, as in the dbt macro dbt_prefect.prefect_config:
    # source-level meta (sources only), the node's meta, then config.meta.
    source_meta = (getattr(entry, "source_meta", None) or {}) if resource_type == "source" else {}
    meta = {**source_meta, **own_meta, **config_meta}
    prefect_config = merge_prefect_config(
        _meta_prefect(source_meta), _meta_prefect(own_meta), _meta_prefect(config_meta)
    )
    alias = getattr(entry, "identifier", None) if resource_type == "source" else getattr(entry, "alias", None)
    depends_on = getattr(entry, "depends_on", None)
    attached = getattr(entry, "attached_node", None)
    if resource_type == "unit_test" and depends_on is not None and depends_on.nodes:
        attached = depends_on.nodes[0]
    return DbtNode(
        unique_id=entry.unique_id,
        name=entry.name,
        resource_type=str(resource_type),
        materialized=getattr(config, "materialized", None),
        relation_name=getattr(entry, "relation_name", None),
        database=getattr(entry, "database", None),
        schema=getattr(entry, "schema", None),
        alias=alias,
        original_file_path=getattr(entry, "original_file_path", None),
        description=getattr(entry, "description", "") or "",
        meta=meta,
        prefect_config=prefect_config,
        depends_on=tuple(getattr(depends_on, "nodes", None) or ()),
        attached_node=attached,
    )


def node_from_node_info(node_info: Any) -> DbtNode:
    """A record from the node_info dbt sends with NodeStart, when no manifest is at hand."""
    relation = node_info.node_relation
    meta = _struct_to_dict(node_info.meta)
    return DbtNode(
        unique_id=node_info.unique_id,
        name=node_info.node_name,
        resource_type=node_info.resource_type,
        materialized=node_info.materialized or None,
        relation_name=relation.relation_name or None,
        database=relation.database or None,
        schema=relation.schema or None,
        alias=relation.alias or None,
        original_file_path=node_info.node_path or None,
        meta=meta,
        prefect_config=merge_prefect_config(_meta_prefect(meta)),
    )


def _struct_to_dict(struct: Any) -> dict[str, Any]:
    if isinstance(struct, Mapping):
        return dict(struct)
    try:
        return MessageToDict(struct)
    except Exception:
        return {}


class NodeCatalog:
    """DbtNode records for one invocation, built from dbt's Manifest the first time each is asked for."""

    def __init__(self, manifest: Any = None, translator: DbtPrefectTranslator | None = None) -> None:
        self._manifest = manifest
        self.translator = translator if translator is not None else DbtPrefectTranslator()
        # Filled by dbt's plugin hook once dbt has parsed (see _compat/dbt_plugin.py).
        self.manifest_source: Any = None
        self._nodes: dict[str, DbtNode | None] = {}

    @property
    def manifest(self) -> Any:
        if self._manifest is None and self.manifest_source is not None:
            self._manifest = self.manifest_source.manifest
        return self._manifest

    @property
    def adapter_type(self) -> str | None:
        metadata = getattr(self.manifest, "metadata", None)
        return getattr(metadata, "adapter_type", None)

    def manifest_entry(self, unique_id: str) -> Any:
        manifest = self.manifest
        if manifest is None:
            return None
        # Exposures and saved queries run in `dbt build` too (status no-op), with upstream edges.
        for collection in ("nodes", "sources", "unit_tests", "exposures", "saved_queries"):
            entry = getattr(manifest, collection, {}).get(unique_id)
            if entry is not None:
                return entry
        return None

    def _semantic_inputs(self, unique_id: str) -> list[str]:
        """What a metric or semantic model reads; nothing for anything else."""
        manifest = self.manifest
        for collection in ("metrics", "semantic_models"):
            entry = getattr(manifest, collection, {}).get(unique_id) if manifest is not None else None
            if entry is not None:
                return list(getattr(getattr(entry, "depends_on", None), "nodes", None) or ())
        return []

    def get(self, unique_id: str) -> DbtNode | None:
        try:
            return self._nodes[unique_id]
        except KeyError:
            pass
        entry = self.manifest_entry(unique_id)
        node = self.named(_node_from_manifest_entry(entry)) if entry is not None else None
        self._nodes[unique_id] = node
        return node

    def from_node_info(self, node_info: Any) -> DbtNode:
        """The record of a node dbt announced, from the manifest, else from the event itself."""
        return self.get(node_info.unique_id) or self.named(node_from_node_info(node_info))

    def named(self, node: DbtNode) -> DbtNode:
        """``node`` with the task-run name and asset key the translator gives it."""
        translator = self.translator
        key = None
        if node.assets_enabled:
            adapter_type = self.adapter_type or "dbt"
            try:
                key = validate_asset_key(translator.asset_key(node, adapter_type), node)
            except InvalidAssetKey as exc:
                # The asset stays visible under its default key rather than disappearing.
                _logger.warning("dbt-prefect uses the default asset key instead: %s", exc)
                key = default_asset_key(adapter_type, node.relation_name or node.name)
        return dataclasses.replace(node, task_run_name=translator.task_run_name(node), asset_key=key)

    def parents(self, node: DbtNode) -> Iterable[DbtNode]:
        """Direct parents, with ephemeral models replaced by their own parents, and metrics
        and semantic models by what they read (a saved query waits for the models under
        its metrics, as in dbt build)."""
        seen: set[str] = set()
        pending = list(node.depends_on)
        while pending:
            unique_id = pending.pop(0)
            if unique_id in seen:
                continue
            seen.add(unique_id)
            parent = self.get(unique_id)
            if parent is None:
                pending.extend(self._semantic_inputs(unique_id))
                continue
            if parent.is_ephemeral:
                pending.extend(parent.depends_on)
                continue
            yield parent
