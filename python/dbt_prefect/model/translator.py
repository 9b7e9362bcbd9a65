"""DbtPrefectTranslator: the one seam for changing what Prefect shows of a dbt node.

Subclass it and pass an instance as ``PrefectDbtRunner(translator=...)`` or
``PrefectDbtOrchestrator(translator=...)``. Each method gets the node's record
(``DbtNode``) and returns one thing; the defaults are the official prefect-dbt rules,
so asset history carries over from it. The orchestrator pickles the translator to its
workers, so a subclass must be importable there (define it in a module, not in
``__main__`` of an interactive session) and keep its state picklable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prefect.types.names import MAX_ASSET_KEY_LENGTH, RESTRICTED_ASSET_CHARACTERS

if TYPE_CHECKING:
    from dbt_prefect.model.nodes import DbtNode, NodeCatalog

MAX_DESCRIPTION_LENGTH = 2500  # Prefect's limit on an asset's description
TRUNCATION_MARKER = "… (truncated)"
_CODE_DROPPED_NOTE = "\n\n_Compiled code omitted: it does not fit Prefect's 2,500-character description limit._"


class InvalidAssetKey(ValueError):
    """A key that Prefect would refuse: it names the node and the rule it breaks."""


def default_asset_key(adapter_type: str, relation_name: str) -> str:
    """``<adapter_type>://`` + the relation name without quotes, dots as slashes (the official rule)."""
    path = relation_name.replace('"', "").replace(".", "/")
    key = f"{adapter_type}://{path}"
    for char in RESTRICTED_ASSET_CHARACTERS:
        if char in key:
            key = key.replace(char, "")
    return key[:MAX_ASSET_KEY_LENGTH]


def asset_name(relation_name: str) -> str:
    """The relation name without adapter quoting: "dev"."main"."orders" -> dev.main.orders."""
    return relation_name.replace('"', "").replace("`", "")


def asset_description(description: str, compiled_code: str | None = None) -> str | None:
    """The dbt description, with the compiled SQL appended if asked and if it fits; code
    that does not fit is left out whole, with a note, rather than cut mid-statement."""
    base = description or ""
    if compiled_code:
        code_block = f"### Compiled code\n```sql\n{compiled_code.strip()}\n```"
        with_code = f"{base}\n\n{code_block}" if base else code_block
        if len(with_code) <= MAX_DESCRIPTION_LENGTH:
            return with_code
        base = base + _CODE_DROPPED_NOTE if base else _CODE_DROPPED_NOTE.strip()
        if len(base) > MAX_DESCRIPTION_LENGTH:
            keep = MAX_DESCRIPTION_LENGTH - len(_CODE_DROPPED_NOTE) - len(TRUNCATION_MARKER)
            base = (description or "")[:keep] + TRUNCATION_MARKER + _CODE_DROPPED_NOTE
    if len(base) > MAX_DESCRIPTION_LENGTH:
        base = base[: MAX_DESCRIPTION_LENGTH - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
    return base or None


def validate_asset_key(key: str, node: DbtNode) -> str:
    """``key`` if Prefect accepts it as an asset key; else InvalidAssetKey naming the node and the fix."""
    problem = None
    if "://" not in key or not key.split("://", 1)[0]:
        problem = "it has no scheme such as `bigquery://`"
    elif len(key) > MAX_ASSET_KEY_LENGTH:
        problem = f"it is longer than {MAX_ASSET_KEY_LENGTH} characters"
    else:
        bad = sorted({char for char in RESTRICTED_ASSET_CHARACTERS if char in key})
        if bad:
            problem = f"it contains {', '.join(repr(c) for c in bad)}, which Prefect does not allow"
    if problem is not None:
        raise InvalidAssetKey(
            f"asset key {key!r} of {node.resource_type} {node.name} is not valid: {problem} "
            "(fix `meta.prefect.asset_key` or DbtPrefectTranslator.asset_key)"
        )
    return key


class DbtPrefectTranslator:
    """How dbt nodes are named and keyed in Prefect. Override any method; the rest keep the defaults."""

    def task_run_name(self, node: DbtNode) -> str:
        """The task run's name: ``<resource type> <name>``, e.g. ``model orders``."""
        return f"{node.resource_type} {node.name}"

    def asset_key(self, node: DbtNode, adapter_type: str) -> str:
        """The asset's key: ``meta.prefect.asset_key`` when set, else the official rule
        (``duckdb://dev/main/orders`` for ``"dev"."main"."orders"`` on DuckDB)."""
        override = node.prefect_config.get("asset_key")
        if override:
            return str(override)
        assert node.relation_name, "only relations are assets"
        return default_asset_key(adapter_type, node.relation_name)

    def asset_properties(self, node: DbtNode, compiled_code: str | None = None) -> dict[str, Any]:
        """The asset's ``name``, ``description`` (compiled code appended when asked for) and ``owners``."""
        properties: dict[str, Any] = {"name": asset_name(node.relation_name or node.name)}
        description = asset_description(node.description, compiled_code)
        if description:
            properties["description"] = description
        if node.owners:
            properties["owners"] = list(node.owners)
        return properties

    def materialization_metadata(self, node: DbtNode, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """The payload of the node's materialization event. ``metadata`` is what dbt-prefect
        collected (node_info, execution_time, rows_affected, message, and row_count and
        columns when the metadata hook ran); return it, trimmed or extended."""
        return dict(metadata)

    def checked_assets(self, test: DbtNode, catalog: NodeCatalog) -> list[DbtNode]:
        """The asset nodes a test or unit test checks: the node it is attached to, else
        every asset it selects from (a singular test). Empty when it checks no asset."""
        targets = [test.attached_node] if test.attached_node else list(dict.fromkeys(test.depends_on))
        found = []
        for unique_id in targets:
            node = catalog.get(unique_id)
            if node is not None and node.assets_enabled:
                found.append(node)
        return found
