"""Delivery to the Prefect API: a run's events and log lines go out through an outbox
(outbox.py) that retries while the API is away and gives up on it in bounded time; the
readback and the outbox talk plain HTTP with short timeouts (api.py)."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

from dbt_prefect.delivery.outbox import DeliveryReport, Outbox

__all__ = ["DeliveryReport", "Outbox", "open_outbox", "routed"]

_logger = logging.getLogger("dbt_prefect")


def open_outbox(in_flow: bool) -> Outbox | None:
    """A started outbox for a run inside a flow (its events and logs go to the API), else None."""
    if not in_flow:
        return None
    from dbt_prefect._compat.prefect import related_resources
    from dbt_prefect.delivery.api import PrefectApi

    try:
        api = PrefectApi()
    except Exception as exc:  # no API configured: Prefect's own workers handle it, as before
        _logger.debug("dbt-prefect delivers through Prefect's workers: %s", exc)
        return None
    from prefect.settings import get_current_settings

    outbox = Outbox(api, related_resources(), get_current_settings().server.events.maximum_related_resources)
    outbox.start()
    return outbox


def routed(outbox: Outbox | None) -> Any:
    """The context in which Prefect's events and API logs go to ``outbox`` (none: to Prefect's workers)."""
    if outbox is None:
        return nullcontext()
    from dbt_prefect._compat.prefect import routed_to

    return routed_to(outbox)
