"""Prefect assets for dbt relations: keys, properties, lineage and materialization events.

Keys follow the official prefect-dbt integration exactly, so switching keeps asset
history: ``<adapter_type>://`` + relation_name without double quotes, dots as slashes.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Callable, Iterable, Optional

from dbt_prefect.checks import CHECK_EVENT_PREFIX, TEST_RESOURCE_TYPES, check_outcome, check_payload, checked_nodes
from dbt_prefect.metadata import metadata_payload
from dbt_prefect.nodes import DbtNode, NodeCatalog

_logger = logging.getLogger("dbt_prefect")

MATERIALIZED_BY = "dbt"
MAX_DESCRIPTION_LENGTH = 2500
TRUNCATION_MARKER = "… (truncated)"
_CODE_DROPPED_NOTE = "\n\n_Compiled code omitted: it does not fit Prefect's 2,500-character description limit._"


def asset_key(adapter_type: str, relation_name: str) -> str:
    from dbt_prefect._prefect_compat import MAX_ASSET_KEY_LENGTH, RESTRICTED_ASSET_CHARACTERS

    path = relation_name.replace('"', "").replace(".", "/")
    key = f"{adapter_type}://{path}"
    for char in RESTRICTED_ASSET_CHARACTERS:
        if char in key:
            key = key.replace(char, "")
    return key[:MAX_ASSET_KEY_LENGTH]


def asset_name(relation_name: str) -> str:
    """The relation name without adapter quoting: "dev"."main"."orders" -> dev.main.orders."""
    return relation_name.replace('"', "").replace("`", "")


def asset_description(description: str, compiled_code: Optional[str] = None) -> Optional[str]:
    """The dbt description, with the compiled SQL appended if asked and if it fits."""
    base = description or ""
    if compiled_code:
        with_code = f"{base}\n\n### Compiled code\n```sql\n{compiled_code.strip()}\n```" if base else (
            f"### Compiled code\n```sql\n{compiled_code.strip()}\n```"
        )
        if len(with_code) <= MAX_DESCRIPTION_LENGTH:
            return with_code
        base = base + _CODE_DROPPED_NOTE if base else _CODE_DROPPED_NOTE.strip()
        if len(base) > MAX_DESCRIPTION_LENGTH:
            keep = MAX_DESCRIPTION_LENGTH - len(_CODE_DROPPED_NOTE) - len(TRUNCATION_MARKER)
            base = (description or "")[:keep] + TRUNCATION_MARKER + _CODE_DROPPED_NOTE
    if len(base) > MAX_DESCRIPTION_LENGTH:
        base = base[: MAX_DESCRIPTION_LENGTH - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
    return base or None


def node_asset(node: DbtNode, adapter_type: str, compiled_code: Optional[str] = None) -> Any:
    from prefect.assets import Asset, AssetProperties

    assert node.relation_name
    properties: dict[str, Any] = {"name": asset_name(node.relation_name)}
    description = asset_description(node.description, compiled_code)
    if description:
        properties["description"] = description
    if node.owners:
        properties["owners"] = list(node.owners)
    return Asset(key=asset_key(adapter_type, node.relation_name), properties=AssetProperties(**properties))


def upstream_asset_nodes(node: DbtNode, catalog: NodeCatalog) -> Iterable[DbtNode]:
    """Parents that are assets themselves: through ephemerals, without relation-less sources
    or parents whose assets are turned off."""
    return [parent for parent in catalog.parents(node) if parent.assets_enabled]


def materialization_metadata(node_info: Any, run_result: Any, message: str) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    metadata = MessageToDict(node_info, preserving_proto_field_name=True)
    metadata.pop("node_checksum", None)
    metadata["execution_time"] = run_result.execution_time
    adapter_response = MessageToDict(run_result.adapter_response) if run_result.adapter_response else {}
    rows = adapter_response.get("rows_affected")
    if rows is not None:
        metadata["rows_affected"] = int(rows)
    metadata["message"] = message
    return metadata


class AssetEmitter:
    """Emits asset events when a node's task run reaches its terminal state."""

    def __init__(
        self,
        catalog: NodeCatalog,
        *,
        include_compiled_code: bool = False,
        scrub: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.catalog = catalog
        self.include_compiled_code = include_compiled_code
        self._scrub = scrub
        self.event_ids: list[uuid.UUID] = []
        self._upstream_assets: dict[str, Any] = {}
        # Asset keys this invocation has already put on the server, by a materialization
        # or a reference: an upstream asset is referenced once, and only if nothing in
        # the run materialized it first (its lineage is on every child's materialization).
        self._announced: set[str] = set()

    def _compiled_code(self, node: DbtNode) -> Optional[str]:
        if not self.include_compiled_code:
            return None
        entry = self.catalog.manifest_entry(node.unique_id)
        code = getattr(entry, "compiled_code", None)
        return self._scrub(code) if code else None

    def _asset_of(self, node: DbtNode, adapter_type: str) -> Any:
        # An upstream asset carries the same key, name and properties it has when it is
        # materialized itself (compiled code included), computed once per invocation.
        asset = self._upstream_assets.get(node.unique_id)
        if asset is None:
            asset = node_asset(node, adapter_type, self._compiled_code(node))
            self._upstream_assets[node.unique_id] = asset
        return asset

    def node_finished(self, finished: Any, state: Any) -> None:
        node: DbtNode = finished.node
        if state is None:
            return
        if node.resource_type in TEST_RESOURCE_TYPES:
            self._test_finished(finished)
            return
        if not node.assets_enabled or node.resource_type == "source":
            return
        if state.name == "Skipped":
            return
        if state.is_failed():
            outcome = "failed"
        elif state.is_completed():
            outcome = "succeeded"
        else:
            return
        adapter_type = self.catalog.adapter_type or "dbt"
        from prefect.context import AssetContext
        from prefect.events import emit_event

        asset = self._asset_of(node, adapter_type)
        upstream = [self._asset_of(parent, adapter_type) for parent in upstream_asset_nodes(node, self.catalog)]
        for parent_asset in upstream:
            if parent_asset.key in self._announced:
                continue
            self._announced.add(parent_asset.key)
            event = emit_event(
                event="prefect.asset.referenced",
                resource=AssetContext.asset_as_resource(parent_asset),
                related=[],
            )
            if event is not None:
                self.event_ids.append(event.id)
        related = [AssetContext.asset_as_related(parent_asset) for parent_asset in upstream]
        related.append(AssetContext.related_materialized_by(MATERIALIZED_BY))
        related.append(
            {
                "prefect.resource.id": f"prefect.task-run.{finished.task_run_id}",
                "prefect.resource.role": "task-run",
                "prefect.resource.name": node.task_run_name,
            }
        )
        payload = materialization_metadata(finished.node_info, finished.run_result, finished.message)
        warehouse = getattr(finished, "metadata", None)
        if warehouse is not None:
            payload.update(metadata_payload(warehouse, self.catalog.manifest_entry(node.unique_id)))
        event = emit_event(
            event=f"prefect.asset.materialization.{outcome}",
            resource=AssetContext.asset_as_resource(asset),
            related=related,
            payload=payload,
        )
        self._announced.add(asset.key)
        if event is not None:
            self.event_ids.append(event.id)

    def _test_finished(self, finished: Any) -> None:
        """A dbt test or unit test as a check on each asset it tests (checks.py)."""
        outcome = check_outcome(finished.status)
        if outcome is None or finished.task_run_id is None:
            return
        test: DbtNode = finished.node
        targets = checked_nodes(test, self.catalog)
        if not targets:
            return
        from prefect.context import AssetContext
        from prefect.events import emit_event

        result = finished.run_result
        failures = None if finished.status in ("error", "runtime error") else int(getattr(result, "num_failures", 0) or 0)
        payload = check_payload(test, finished.status, finished.message, failures)
        related = [
            {
                "prefect.resource.id": f"prefect.task-run.{finished.task_run_id}",
                "prefect.resource.role": "task-run",
                "prefect.resource.name": test.task_run_name,
            }
        ]
        adapter_type = self.catalog.adapter_type or "dbt"
        for target in targets:
            event = emit_event(
                event=f"{CHECK_EVENT_PREFIX}{outcome}",
                resource=AssetContext.asset_as_resource(self._asset_of(target, adapter_type)),
                related=related,
                payload=payload,
            )
            if event is not None:
                self.event_ids.append(event.id)

    def wait_until_recorded(self, timeout: float) -> int:
        """Wait until the server has stored every emitted asset event; return how many it may not have.

        Each round asks, per chunk of ids, only how many of them the server holds (one
        count query per 500 events), and sleeps only while some are still missing.
        """
        if not self.event_ids:
            return 0
        from prefect.client.orchestration import get_client
        from prefect.events.filters import EventFilter, EventIDFilter

        deadline = time.monotonic() + timeout
        pending = list(self.event_ids)
        delay = 0.05
        with get_client(sync_client=True) as client:
            while True:
                still_missing: list[uuid.UUID] = []
                for start in range(0, len(pending), 500):
                    chunk = pending[start : start + 500]
                    page = client.read_events(filter=EventFilter(id=EventIDFilter(id=chunk)), limit=1)
                    if page.total < len(chunk):
                        still_missing.extend(chunk)
                pending = still_missing
                if not pending or time.monotonic() >= deadline:
                    break
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        return len(pending)
