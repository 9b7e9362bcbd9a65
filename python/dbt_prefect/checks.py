"""dbt tests as checks on the assets they test.

When a test finishes, the runner emits ``dbt_prefect.asset.check.passed``, ``.warned`` or
``.failed`` with the tested asset as the event's resource and the test's task run as a
related resource. Which asset a test checks:
- a generic test: the node it is attached to (for ``relationships``, the model it is
  defined on), or the source it is defined on;
- a unit test: the model it tests;
- a singular test: each model, seed, snapshot or source it selects from.
"""

from __future__ import annotations

from typing import Any, Optional

from dbt_prefect.nodes import DbtNode, NodeCatalog

CHECK_EVENT_PREFIX = "dbt_prefect.asset.check."
TEST_RESOURCE_TYPES = frozenset({"test", "unit_test"})

_OUTCOMES = {
    "pass": "passed",
    "success": "passed",
    "warn": "warned",
    "fail": "failed",
    "error": "failed",
    "runtime error": "failed",
}


def check_outcome(status: str) -> Optional[str]:
    """passed, warned or failed; None for skipped tests and statuses that are no verdict."""
    return _OUTCOMES.get(status)


def checked_nodes(test: DbtNode, catalog: NodeCatalog) -> list[DbtNode]:
    """The asset nodes a test or unit test checks; empty when none of them is an asset."""
    if test.attached_node:
        targets = [test.attached_node]
    else:
        targets = list(dict.fromkeys(test.depends_on))
    found = []
    for unique_id in targets:
        node = catalog.get(unique_id)
        if node is not None and node.assets_enabled:
            found.append(node)
    return found


def check_payload(test: DbtNode, status: str, message: Optional[str], failures: Optional[int]) -> dict[str, Any]:
    return {
        "test_name": test.name,
        "unique_id": test.unique_id,
        "status": status,
        "failures": failures,
        "message": message or None,
    }
