"""dbt tests as checks on the assets they test.

When a test finishes, the runner emits ``dbt_prefect.asset.check.passed``, ``.warned`` or
``.failed`` (model/statuses.py names the outcome) with the tested asset as the event's
resource and the test's task run as a related resource. Which assets a test checks is the
translator's ``checked_assets``:
- a generic test: the node it is attached to (for ``relationships``, the model it is
  defined on), or the source it is defined on;
- a unit test: the model it tests;
- a singular test: each model, seed, snapshot or source it selects from.
"""

from __future__ import annotations

from typing import Any

from dbt_prefect.model.nodes import DbtNode

CHECK_EVENT_PREFIX = "dbt_prefect.asset.check."
TEST_RESOURCE_TYPES = frozenset({"test", "unit_test"})


def check_payload(test: DbtNode, status: str, message: str | None, failures: int | None) -> dict[str, Any]:
    return {
        "test_name": test.name,
        "unique_id": test.unique_id,
        "status": status,
        "failures": failures,
        "message": message or None,
    }
