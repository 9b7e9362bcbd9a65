"""The lineage of one invocation, as the picture's records (mermaid.py draws them).

Its nodes are the seeds, models, snapshots and sources dbt ran, the nodes they read (a
build's sources, parents outside the selection) and the nodes the invocation's tests
checked. Edges come from the manifest, with ephemeral models passed through
(``NodeCatalog.parents``). Tests are counted on the nodes they check, by the rule of the
asset checks (model/checks.py): the node a test is attached to, else each node a singular
test selects from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

from dbt_prefect.model.checks import TEST_RESOURCE_TYPES
from dbt_prefect.model.nodes import DbtNode
from dbt_prefect.runner.report.mermaid import CheckCounts, LineageNode

PICTURED_TYPES = frozenset({"seed", "model", "snapshot", "source"})
_TYPE_ORDER = {"source": 0, "seed": 1, "snapshot": 2, "model": 3}


def display_name(node: DbtNode) -> str:
    """``payments_app.payments`` for a source, ``orders.v2`` for a model version, else the name."""
    parts = node.unique_id.split(".")
    if node.resource_type == "source" and len(parts) >= 4:
        return ".".join(parts[2:])
    if node.resource_type == "model" and len(parts) == 4 and parts[3].startswith("v") and parts[2] == node.name:
        return f"{node.name}.{parts[3]}"
    return node.name


def folder_of(node: DbtNode, root_project: str | None) -> str:
    """The folder of the node's file (``models/staging``); a package's nodes are prefixed
    with the package (``dbt_utils: models/sql``)."""
    path = node.original_file_path or ""
    folder = str(PurePosixPath(path.replace("\\", "/")).parent) if path else ""
    if folder in ("", "."):
        folder = f"{node.resource_type}s"
    parts = node.unique_id.split(".")
    package = parts[1] if len(parts) > 2 else None
    if package and root_project and package != root_project:
        return f"{package}: {folder}"
    return folder


def _pictured(node: DbtNode | None) -> bool:
    return node is not None and node.resource_type in PICTURED_TYPES and not node.is_ephemeral


def lineage_nodes(finished: Mapping[str, Any], catalog: Any) -> list[LineageNode]:
    """The picture's records for the recorder's ``finished`` nodes (unique_id -> FinishedNode),
    sources first, then seeds, snapshots and models, each by name."""
    manifest = getattr(catalog, "manifest", None)
    root_project = getattr(getattr(manifest, "metadata", None), "project_name", None)
    ran = {uid: done for uid, done in finished.items() if _pictured(done.node)}
    nodes: dict[str, DbtNode] = {uid: done.node for uid, done in ran.items()}
    parents: dict[str, tuple[str, ...]] = {}
    for uid, done in ran.items():
        found = [p for p in catalog.parents(done.node) if _pictured(p)]
        parents[uid] = tuple(dict.fromkeys(p.unique_id for p in found))
        for parent in found:
            nodes.setdefault(parent.unique_id, parent)
    tests: dict[str, CheckCounts] = {}
    for done in finished.values():
        if done.node.resource_type not in TEST_RESOURCE_TYPES:
            continue
        for target in _checked(done.node, catalog):
            nodes.setdefault(target.unique_id, target)
            tests[target.unique_id] = tests.get(target.unique_id, CheckCounts()) + CheckCounts.of(done.status)
    records = [
        LineageNode(
            unique_id=uid,
            name=display_name(node),
            resource_type=node.resource_type,
            status=ran[uid].status if uid in ran else None,
            folder=folder_of(node, root_project),
            parents=parents.get(uid, ()),
            tests=tests.get(uid, CheckCounts()),
            task_run_id=ran[uid].task_run_id if uid in ran else None,
        )
        for uid, node in nodes.items()
    ]
    records.sort(key=lambda n: (_TYPE_ORDER.get(n.resource_type, 9), n.name, n.unique_id))
    return records


def _checked(test: DbtNode, catalog: Any) -> Iterable[DbtNode]:
    """The pictured nodes a test checks: the one it is attached to, else each it selects from."""
    targets = [test.attached_node] if test.attached_node else list(dict.fromkeys(test.depends_on))
    for unique_id in targets:
        node = catalog.get(unique_id)
        if _pictured(node):
            assert node is not None
            yield node
