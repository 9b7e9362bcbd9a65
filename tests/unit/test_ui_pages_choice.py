"""Which UI's pages the links open (runner/report/links.py), from the server's /ui-settings
answer: the answers below are Prefect's own (3.9.1 and 3.8.8 answer alike; tests/test_ui_links.py
reads a real one)."""

from __future__ import annotations

import datetime as dt

import pytest

from dbt_prefect.runner.report.links import UiPages, event_feed_url, pages_from_ui_settings, v2_event_feed_url

UI = "http://127.0.0.1:4200"
PREFECT_39 = {
    "api_url": f"{UI}/api",
    "csrf_enabled": False,
    "auth": None,
    "flags": [],
    "default_ui": "v2",
    "available_uis": ["v1", "v2"],
    "v1_base_url": "/",
    "v2_base_url": "/v2",
}


@pytest.mark.parametrize(
    ("answer", "pages"),
    [
        # V2 is the default for a browser with no saved preference.
        (PREFECT_39, UiPages(f"{UI}/v2", "v2", served=True)),
        # PREFECT_SERVER_UI_V2_ENABLED=false: V1 again.
        ({**PREFECT_39, "default_ui": "v1"}, UiPages(UI, "v1", served=True)),
        # Served under a base path: V2's root follows it.
        (
            {**PREFECT_39, "v1_base_url": "/prefect", "v2_base_url": "/prefect/v2"},
            UiPages(f"{UI}/v2", "v2", served=True),
        ),
        # An older server, with one UI, says nothing of a default.
        ({"api_url": f"{UI}/api", "csrf_enabled": False, "auth": None, "flags": []}, UiPages(UI, "v1", served=True)),
        # A server without the UI's static files.
        (
            {**PREFECT_39, "available_uis": [], "v1_base_url": None, "v2_base_url": None},
            UiPages(UI, "v1", served=False),
        ),
        ("not json", UiPages(UI, "v1", served=None)),
    ],
)
def test_the_links_follow_the_servers_default_ui(answer: object, pages: UiPages) -> None:
    assert pages_from_ui_settings(UI, answer) == pages


def test_the_pages_of_each_ui() -> None:
    v2 = UiPages(f"{UI}/v2", "v2")
    v1 = UiPages(UI, "v1")
    assert v2.flow_run("f00") == f"{UI}/v2/runs/flow-run/f00"
    assert v2.task_run("t00") == f"{UI}/v2/runs/task-run/t00"
    assert v2.artifact("a00") == f"{UI}/v2/artifacts/artifact/a00"
    assert v1.flow_run("f00") == f"{UI}/runs/flow-run/f00"
    assert v1.task_run("t00") == f"{UI}/runs/task-run/t00"
    assert v1.artifact("a00") == f"{UI}/artifacts/artifact/a00"


def test_each_ui_gets_its_own_event_feed_filter() -> None:
    since = dt.datetime(2025, 3, 4, 5, 6, tzinfo=dt.UTC)
    until = dt.datetime(2025, 3, 4, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    # V2's router reads lists as JSON arrays, and its range as rangeType, start and end.
    assert UiPages(f"{UI}/v2", "v2").event_feed("f00", since, until) == (
        f"{UI}/v2/events?resource=%5B%22prefect.flow-run.f00%22%5D&events=%5B%22prefect.asset.*%22%5D"
        "&rangeType=range&start=2025-03-04T05:06:00.000Z&end=2025-03-04T05:08:09.000Z"
    )
    assert v2_event_feed_url(f"{UI}/v2", "f00") == (
        f"{UI}/v2/events?resource=%5B%22prefect.flow-run.f00%22%5D&events=%5B%22prefect.asset.*%22%5D"
    )
    assert (
        UiPages(UI, "v1").event_feed("f00", since, until)
        == event_feed_url(UI, "f00", since, until)
        == (
            f"{UI}/events?resource=prefect.flow-run.f00&events=prefect.asset.*"
            "&type=range&startDate=2025-03-04T05:06:00.000Z&endDate=2025-03-04T05:08:09.000Z"
        )
    )
