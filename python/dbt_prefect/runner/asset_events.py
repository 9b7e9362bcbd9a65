"""Asset events for the nodes of one run: materializations, references and checks.

When a node's task run reaches its terminal state, its asset gets the events a Prefect
``@materialize`` task with the same ``asset_deps`` emits: a ``prefect.asset.referenced``
event per upstream asset, then ``prefect.asset.materialization.succeeded`` or ``.failed``
whose related resources are its upstream assets (its lineage), ``dbt`` as materializer and
its task run. A finished test becomes a check event on each asset it tests (checks.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from prefect.assets import Asset
from prefect.context import AssetContext
from prefect.events import emit_event

from dbt_prefect.model.assets import MATERIALIZED_BY, materialization_metadata, node_asset, upstream_asset_nodes
from dbt_prefect.model.checks import CHECK_EVENT_PREFIX, TEST_RESOURCE_TYPES, check_payload
from dbt_prefect.model.metadata import metadata_payload
from dbt_prefect.model.nodes import DbtNode, FinishedNode, NodeCatalog
from dbt_prefect.model.statuses import Outcome, classify

# Which materialization event a node's outcome gives; skipped and no-op nodes built nothing.
_MATERIALIZATION_EVENTS = {
    Outcome.SUCCEEDED: "prefect.asset.materialization.succeeded",
    Outcome.WARNED: "prefect.asset.materialization.succeeded",
    Outcome.FAILED: "prefect.asset.materialization.failed",
}


def _task_run_resource(task_run_id: Any, name: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"prefect.task-run.{task_run_id}",
        "prefect.resource.role": "task-run",
        "prefect.resource.name": name,
    }


class AssetEmitter:
    """Emits asset events when a node's task run reaches its terminal state."""

    def __init__(
        self,
        catalog: NodeCatalog,
        *,
        include_compiled_code: bool = False,
        scrub: Callable[[str], str] = lambda text: text,
        hold_until_dbt_returns: bool = False,
    ) -> None:
        self.catalog = catalog
        # Under --fail-fast, dbt reports nodes that were running when a node failed as
        # skipped, after they logged success: their events wait for dbt's final result.
        self._held: list[FinishedNode] | None = [] if hold_until_dbt_returns else None
        self.include_compiled_code = include_compiled_code
        self._scrub = scrub
        self.event_ids: list[uuid.UUID] = []
        # Each asset as its own materialization described it (compiled code included), for
        # the events that name it later as an upstream asset or a checked one.
        self._assets: dict[str, Asset] = {}

    def _compiled_code(self, node: DbtNode) -> str | None:
        if not self.include_compiled_code:
            return None
        entry = self.catalog.manifest_entry(node.unique_id)
        code = getattr(entry, "compiled_code", None)
        return self._scrub(code) if code else None

    def _asset_of(self, node: DbtNode) -> Asset:
        # An upstream asset carries the key, name and properties it has when it is
        # materialized itself. Before that (a unit test runs before its model), it is
        # described afresh and without compiled code: whether dbt has compiled it by the time
        # this event is sent is a race, and an event's content must not depend on one.
        asset = self._assets.get(node.unique_id)
        if asset is None:
            asset = node_asset(node, self.catalog)
        return asset

    def _emit(self, **event: Any) -> None:
        emitted = emit_event(**event)
        if emitted is not None:
            self.event_ids.append(emitted.id)

    def node_finished(self, finished: FinishedNode, state: Any = None) -> None:
        """Called by the recorder once the node's terminal state is recorded."""
        if self._held is not None:
            self._held.append(finished)
            return
        self._emit_for(finished)

    def release(self) -> None:
        """Emit what was held, by each node's final status (the recorder reconciled them)."""
        held, self._held = self._held or [], None
        for finished in held:
            self._emit_for(finished)

    def _emit_for(self, finished: FinishedNode) -> None:
        node = finished.node
        if finished.task_run_id is None:
            return
        if node.resource_type in TEST_RESOURCE_TYPES:
            self._test_finished(finished)
            return
        if not node.assets_enabled or node.resource_type == "source":
            return
        event_name = _MATERIALIZATION_EVENTS.get(classify(finished.status).outcome)
        if event_name is None:
            return
        asset = node_asset(node, self.catalog, self._compiled_code(node))
        self._assets[node.unique_id] = asset
        upstream = [self._asset_of(parent) for parent in upstream_asset_nodes(node, self.catalog)]
        for parent_asset in upstream:
            self._emit(
                event="prefect.asset.referenced", resource=AssetContext.asset_as_resource(parent_asset), related=[]
            )
        related = [AssetContext.asset_as_related(parent_asset) for parent_asset in upstream]
        related.append(AssetContext.related_materialized_by(MATERIALIZED_BY))
        related.append(_task_run_resource(finished.task_run_id, node.task_run_name))
        payload = materialization_metadata(finished.node_info, finished.run_result, finished.message)
        if finished.metadata is not None:
            payload.update(metadata_payload(finished.metadata, self.catalog.manifest_entry(node.unique_id)))
        payload = self.catalog.translator.materialization_metadata(node, payload)
        self._emit(event=event_name, resource=AssetContext.asset_as_resource(asset), related=related, payload=payload)

    def _test_finished(self, finished: FinishedNode) -> None:
        """A dbt test or unit test as a check on each asset it tests."""
        info = classify(finished.status)
        if info.check is None:
            return
        test = finished.node
        targets = self.catalog.translator.checked_assets(test, self.catalog)
        if not targets:
            return
        failures = int(getattr(finished.run_result, "num_failures", 0) or 0) if info.has_failure_count else None
        payload = check_payload(test, finished.status, finished.message, failures)
        related = [_task_run_resource(finished.task_run_id, test.task_run_name)]
        for target in targets:
            self._emit(
                event=f"{CHECK_EVENT_PREFIX}{info.check}",
                resource=AssetContext.asset_as_resource(self._asset_of(target)),
                related=related,
                payload=payload,
            )
