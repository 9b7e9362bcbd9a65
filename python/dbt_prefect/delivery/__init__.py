"""Delivery to the Prefect API: a run's events and log lines go out through an outbox
(outbox.py) that retries while the API is away and gives up on it in bounded time; the
readback and the outbox talk plain HTTP with short timeouts (api.py)."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

from dbt_prefect.delivery.outbox import DeliveryReport, Outbox

__all__ = ["DeliveryReport", "Outbox", "deliver", "open_outbox", "routed"]

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

    outbox = Outbox(api, related_resources, get_current_settings().server.events.maximum_related_resources)
    outbox.start()
    return outbox


def routed(outbox: Outbox | None) -> Any:
    """The context in which Prefect's events and API logs go to ``outbox`` (none: to Prefect's workers)."""
    if outbox is None:
        return nullcontext()
    from dbt_prefect._compat.prefect import routed_to

    return routed_to(outbox)


def deliver(outbox: Outbox | None, timeout: float) -> bool:
    """Close the run's outbox: True when everything reached the API (or there was no outbox).

    Otherwise one warning names what was not delivered, and Prefect's own workers are let
    go at exit if the API is still away then."""
    if outbox is None:
        return True
    report = outbox.close(timeout)
    if not report.complete:
        from dbt_prefect._compat.prefect import release_at_exit
        from dbt_prefect.delivery.api import api_answers

        _logger.warning(report.warning())
        release_at_exit(api_answers)
        return False
    if report.rejected:
        _logger.warning("the Prefect API rejected %d event(s) or log line(s): %s", report.rejected, report.error)
    return True
