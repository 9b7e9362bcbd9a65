"""Addresses of Prefect UI pages, in the UI a user of this server gets by default.

Prefect's server (3.9.1, and 3.8.8 as installed here) serves two UIs: V1 at the old
addresses and V2 under ``/v2/``. V2 is the default for a browser with no saved preference
(``server.ui.v2_enabled``, true unless turned off), but a V1 address opens V1 whatever the
default: only the UI's root redirects. So the links we print follow the server's own
answer at ``<ui>/ui-settings`` (``default_ui``, ``v1_base_url``, ``v2_base_url``; checked
against Prefect 3.9.1 and 3.8.8). A server that does not say (an older Prefect) gets V1's
addresses, which every Prefect serves; Prefect Cloud has one UI, with V1's paths.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from prefect.settings import get_current_settings

from dbt_prefect.runner.report.model import ASSET_EVENTS

V1, V2 = "v1", "v2"


def ui_url() -> str | None:
    """The Prefect UI's address (V1's root); None in ephemeral mode, whose server is gone with the process."""
    settings = get_current_settings()
    if not settings.api.url or not settings.ui_url:
        return None
    return settings.ui_url.rstrip("/")


def _utc_text(moment: dt.datetime) -> str:
    # What the UI writes back into its own URL (JavaScript's toISOString).
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _v1_feed(ui: str, resource: str, since: dt.datetime | None, until: dt.datetime | None) -> str:
    params = [("resource", resource), ("events", ASSET_EVENTS)]
    if since is not None and until is not None:
        params += [("type", "range"), ("startDate", _utc_text(since)), ("endDate", _utc_text(until))]
    return f"{ui}/events?{urlencode(params, safe=':*')}"


def _v2_feed(ui: str, resource: str, since: dt.datetime | None, until: dt.datetime | None) -> str:
    # V2's router reads list parameters as JSON arrays, and a range as rangeType, start, end.
    def value(item: Any) -> str:
        return quote(item if isinstance(item, str) else json.dumps(item, separators=(",", ":")), safe=":*")

    params: list[tuple[str, Any]] = [("resource", [resource]), ("events", [ASSET_EVENTS])]
    if since is not None and until is not None:
        params += [("rangeType", "range"), ("start", _utc_text(since)), ("end", _utc_text(until))]
    return f"{ui}/events?" + "&".join(f"{name}={value(item)}" for name, item in params)


def event_feed_url(
    ui: str, flow_run_id: Any, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> str:
    """V1's event feed, showing the asset events related to one flow run.

    ``resource`` matches the event's resource or a related one (every event emitted in a
    flow run is related to it); ``events`` ending in ``*`` is a name prefix. Without
    ``since`` and ``until`` the page shows the past day only."""
    return _v1_feed(ui, f"prefect.flow-run.{flow_run_id}", since, until)


def v2_event_feed_url(
    ui: str, flow_run_id: Any, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> str:
    """V2's event feed with the same filter."""
    return _v2_feed(ui, f"prefect.flow-run.{flow_run_id}", since, until)


@dataclass(frozen=True)
class UiPages:
    """The pages of one Prefect UI: ``root`` is V1's root or V2's (``.../v2``).

    ``served`` is False when the server answered that it serves no UI (started with
    ``PREFECT_SERVER_UI_ENABLED=false``), None when it could not be asked."""

    root: str
    version: str = V1
    served: bool | None = None

    def flow_run(self, flow_run_id: Any) -> str:
        return f"{self.root}/runs/flow-run/{flow_run_id}"

    def task_run(self, task_run_id: Any) -> str:
        return f"{self.root}/runs/task-run/{task_run_id}"

    def artifact(self, artifact_id: Any) -> str:
        return f"{self.root}/artifacts/artifact/{artifact_id}"

    def event_feed(self, flow_run_id: Any, since: dt.datetime | None = None, until: dt.datetime | None = None) -> str:
        """The event feed, showing this flow run's asset events (between ``since`` and ``until``)."""
        feed = _v2_feed if self.version == V2 else _v1_feed
        return feed(self.root, f"prefect.flow-run.{flow_run_id}", since, until)

    def asset_events(self, key: str, since: dt.datetime | None = None, until: dt.datetime | None = None) -> str:
        """The event feed, showing one asset's events: its materializations, with their
        lineage, and its references. The open-source UI has no page of its own for an asset."""
        feed = _v2_feed if self.version == V2 else _v1_feed
        return feed(self.root, key, since, until)


def pages_from_ui_settings(ui: str, answer: Any) -> UiPages:
    """The default UI's pages, from what ``<ui>/ui-settings`` answered (its JSON body)."""
    if not isinstance(answer, dict):
        return UiPages(ui)
    available = answer.get("available_uis")
    if isinstance(available, list) and not available:
        return UiPages(ui, served=False)  # a server without the UI's static files
    if answer.get("default_ui") != V2 or not isinstance(answer.get("v2_base_url"), str):
        return UiPages(ui, served=True)
    v1_base = str(answer.get("v1_base_url") or "/").rstrip("/")
    v2_base = answer["v2_base_url"].rstrip("/")
    # V2's root relative to V1's, which is what `ui` points at (a proxy may add a prefix).
    suffix = v2_base[len(v1_base) :] if v2_base.startswith(v1_base) else v2_base
    return UiPages(f"{ui}{suffix}", V2, served=True)


# The servers' answers, by UI address: asked once per process.
_answers: dict[str, UiPages] = {}
_answers_lock = threading.Lock()


def _ask_ui_settings(ui: str) -> UiPages | None:
    with _answers_lock:
        if ui in _answers:
            return _answers[ui]
    try:
        response = httpx.get(f"{ui}/ui-settings", timeout=2.0)
    except httpx.HTTPError:
        return None  # not kept: the server may answer next time
    try:
        pages = (
            pages_from_ui_settings(ui, response.json()) if response.status_code == 200 else UiPages(ui, served=False)
        )
    except ValueError:
        pages = UiPages(ui, served=False)
    with _answers_lock:
        _answers[ui] = pages
    return pages


def ui_pages() -> UiPages | None:
    """The pages of the UI this server's users get by default; None in ephemeral mode.

    Asks a self-hosted server once per process (its answer is cached), and never Prefect
    Cloud. When the server does not answer, the pages are V1's, which every Prefect serves."""
    ui = ui_url()
    if ui is None:
        return None
    settings = get_current_settings()
    if str(settings.api.url).startswith(settings.cloud.api_url):
        return UiPages(ui, served=True)
    return _ask_ui_settings(ui) or UiPages(ui)
