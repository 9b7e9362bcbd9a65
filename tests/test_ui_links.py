"""Links that open the UI a server's users get by default, against real Prefect servers
that serve their UI: V2's pages (under /v2/) by default, V1's when V2 is turned off
(PREFECT_SERVER_UI_V2_ENABLED=false). The session's server runs without the UI
(conftest.py), so this module starts two of its own.

That the pages open and show the right thing in a browser is checked by
tests/scripts/check_ui_pages.py."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from dbt_prefect.cli.summary import CommandOutcome, flow_run_url, summary_lines
from dbt_prefect.runner.report import RunReport, UiPages, ui_pages
from support.prefect_server import start_prefect_server, stop_prefect_server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module", params=["v2 by default", "v2 turned off"])
def ui_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """A `prefect server` with its UI, on a free 127.0.0.1 port: as installed, or with V2
    turned off; its API URL."""
    home = Path(tempfile.mkdtemp(prefix="dbt-prefect-ui-links-"))
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_API_URL": api_url}
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_SERVER_UI_ENABLED", None)
    if request.param == "v2 turned off":
        env["PREFECT_SERVER_UI_V2_ENABLED"] = "false"
    process = start_prefect_server(port, env, home / "server.log")
    try:
        yield api_url
    finally:
        stop_prefect_server(process)
        shutil.rmtree(home, ignore_errors=True)


def default_root(api_url: str) -> tuple[str, str]:
    """The server's own word (its /ui-settings) on the UI a browser with no saved choice
    gets, and that UI's root."""
    ui = api_url.removesuffix("/api")
    with urllib.request.urlopen(f"{ui}/ui-settings", timeout=10) as response:
        answer = json.load(response)
    default = answer.get("default_ui", "v1")
    return default, f"{ui}{answer['v2_base_url']}" if default == "v2" else ui


def test_the_server_says_v2_unless_it_is_turned_off(ui_server: str, request: pytest.FixtureRequest) -> None:
    turned_off = "v2 turned off" in request.node.callspec.id
    assert default_root(ui_server)[0] == ("v1" if turned_off else "v2")


def opens_as_a_page(url: str) -> bool:
    """The server answers a browser's navigation to ``url`` with the UI, not a redirect."""
    request = urllib.request.Request(url, headers={"Accept": "text/html"})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as response:
            return response.status == 200 and b"<html" in response.read(2000).lower()
    except OSError:
        return False


def test_the_links_open_the_ui_the_server_gives_by_default(ui_server: str) -> None:
    default, root = default_root(ui_server)
    run_id = uuid.uuid4()
    with temporary_settings({PREFECT_API_URL: ui_server}):
        pages = ui_pages()
        assert pages == UiPages(root, default, served=True)
        assert flow_run_url(run_id) == f"{root}/runs/flow-run/{run_id}"
    # The server serves those addresses as pages of that UI (a V1 address is not redirected
    # to V2: that is why the links must name V2's).
    assert opens_as_a_page(f"{root}/runs/flow-run/{run_id}")
    assert opens_as_a_page(f"{root}/runs/task-run/{run_id}")
    assert opens_as_a_page(f"{root}/artifacts/artifact/{run_id}")


def test_the_cli_summary_prints_the_flow_run_and_run_report_pages_of_the_default_ui(ui_server: str) -> None:
    _, root = default_root(ui_server)
    flow_run = SimpleNamespace(id=uuid.uuid4(), name="brave-otter")
    report = RunReport(project="shop", command="build", artifact_id=uuid.uuid4())
    outcome = CommandOutcome(
        flow_run=flow_run, runner=SimpleNamespace(last_report=report), state=SimpleNamespace(name="Completed")
    )
    with temporary_settings({PREFECT_API_URL: ui_server}):
        lines = [text for text, _ in summary_lines(report, outcome, "shop", 0, 1.0)]
    assert lines[-4:] == [
        "Prefect flow run 'brave-otter' of flow 'shop': Completed",
        "Run report: Prefect artifact dbt-shop-build",
        f"View it in Prefect: {root}/runs/flow-run/{flow_run.id}",
        f"Its run report, with the lineage picture: {root}/artifacts/artifact/{report.artifact_id}",
    ]


def test_a_server_without_its_ui_gets_no_link_to_print(prefect_server: str) -> None:
    run_id = uuid.uuid4()
    assert flow_run_url(run_id) is None
    pages = ui_pages()
    # The run report still links V1's addresses: another UI may serve this server's API.
    assert pages == UiPages(prefect_server.removesuffix("/api"), "v1", served=False)
