"""Send a notification when a dbt test on one asset fails: a Prefect automation on
dbt-prefect's `dbt_prefect.asset.check.failed` event.

    python notify_on_failed_test.py ASSET_KEY BLOCK

ASSET_KEY is the asset the test checks, as dbt-prefect names it, e.g.
duckdb://shop/main_marts/orders. BLOCK is a notification block you saved, as
type/name, e.g. slack-webhook/data-alerts. The automation runs on the Prefect server, so
it fires whatever ran the build: a worker, `dbt-prefect serve`, or a flow you started.
"""

import sys

from prefect.automations import Automation
from prefect.client.orchestration import get_client
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture

SUBJECT = "dbt test failed on {{ event.resource.id }}"
BODY = "dbt test {{ event.payload.test_name }} failed on {{ event.resource.id }}: {{ event.payload.message }}"


def notify_on_failed_test(asset_key: str, block: str) -> Automation:
    block_type, block_name = block.split("/", 1)
    with get_client(sync_client=True) as client:
        notification_block = client.read_block_document_by_name(name=block_name, block_type_slug=block_type)
    return Automation(
        name=f"dbt test failed on {asset_key}",
        trigger=EventTrigger(
            expect={"dbt_prefect.asset.check.failed"},
            match={"prefect.resource.id": asset_key},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[SendNotification(block_document_id=notification_block.id, subject=SUBJECT, body=BODY)],
    ).create()


if __name__ == "__main__":
    automation = notify_on_failed_test(sys.argv[1], sys.argv[2])
    print(f"Created automation {automation.name!r} with id {automation.id}")
