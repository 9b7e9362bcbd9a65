"""A flow whose process receives SIGTERM while dbt is running model `orders`.

Usage: interrupted_flow.py PROJECT_DIR. Prints the flow run id on stdout.
"""

import os
import signal
import sys

from prefect import flow
from prefect.context import FlowRunContext

from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings

project = sys.argv[1]


def terminate_on_orders(event) -> None:
    if event.info.name == "NodeStart" and event.data.node_info.unique_id == "model.shop.orders":
        os.kill(os.getpid(), signal.SIGTERM)


@flow
def interrupted() -> None:
    print(FlowRunContext.get().flow_run.id, flush=True)
    runner = PrefectDbtRunner(settings=PrefectDbtSettings(project_dir=project, profiles_dir=project))
    runner.invoke(["build"], callbacks=[terminate_on_orders])


if __name__ == "__main__":
    interrupted()
