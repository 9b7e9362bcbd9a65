#!/usr/bin/env python3
"""Open the Prefect UI pages the demo prints in headless Chromium; fail on a missing page.

    python3 tests/scripts/check_ui_pages.py              # run the demo, check what it prints
    python3 tests/scripts/check_ui_pages.py URL [URL...] # check these pages instead
    options: --out DIR (screenshots and rendered DOMs; default a new temporary directory)

Without URLs it starts its own Prefect server on a free 127.0.0.1 port (state in a
temporary directory, stopped at the end), runs `python3 dev.py demo` against it and
checks every URL the demo prints. A single-page app answers 200 for any path, so a page
counts as missing when the rendered page says so ("Page Not Found"), or when it cannot
reach the API. Each page must also show what it is printed for: the flow run's tabs, the
run report's Assets section, asset materialization events. As a control, `/assets` must
be flagged as missing: the open-source server has no assets page.

Chromium comes from Debian's packages: installed with apt-get when missing and run as
root. Only 127.0.0.1 addresses are opened. Not part of the test suite (it takes a minute
and a browser); the README names it under "Try it".
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BROWSER_NAMES = ("chromium", "chromium-browser")

# Text the UI renders instead of a page: its 404 route, or its banner when the API is unreachable.
MISSING_MARKERS = ("Page Not Found", "Page not found", "Can't connect to Server API")
# What each printed page must show once its data is loaded, by the start of its path.
EXPECTED = {
    "/runs/flow-run/": (r"\d+ Task runs", r"Task Runs", r"Artifacts"),
    "/artifacts/artifact/": (r"Assets \(\d+\)", r"Upstream assets", r"Row count", r"materialized"),
    "/events": (r"Asset materialization succeeded",),
}
# Headless Chromium sometimes captures a page before its data has arrived (its virtual
# time does not wait for every request): a page that lacks its content is loaded again.
ATTEMPTS = 3


def find_browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSER_NAMES) if path), None)


def ensure_browser() -> str:
    browser = find_browser()
    if browser:
        return browser
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit(
            "Chromium is not installed, and this script can install it only as root on Debian "
            "(apt-get install chromium). Install it, or run this script as root."
        )
    print("installing Debian's chromium package (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        if subprocess.run(command, env=env).returncode != 0:
            sys.exit(f"could not install Chromium: `{' '.join(command)}` failed")
    browser = find_browser()
    if not browser:
        sys.exit("apt-get installed chromium, but no chromium executable is on PATH")
    return browser


def local_only(url: str) -> str:
    host = urllib.parse.urlsplit(url).hostname
    if host != "127.0.0.1":
        sys.exit(f"refusing to open {url}: this script opens 127.0.0.1 addresses only")
    return url


def chromium(browser: str, url: str, screenshot: Path) -> subprocess.CompletedProcess[str]:
    """One headless run in a fresh profile (no cookie, such as a saved UI choice, carries
    over): the rendered DOM on stdout and a screenshot, of the same moment."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [
            browser,
            "--headless",
            "--no-sandbox",  # root in a container has no user namespace for the sandbox
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--screenshot={screenshot}",
            "--window-size=1400,1000",
            # Lets the app load its data before the page is captured.
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=180)


def page_text(html: str) -> str:
    """The page's visible words; a select's options are left out (they list every event name)."""
    html = re.sub(r"<(script|style|select)\b.*?</\1>", " ", html, flags=re.S | re.I)
    return " ".join(re.sub(r"<[^>]+>", " ", html).replace("&nbsp;", " ").replace("&#39;", "'").split())


def page_problems(browser: str, url: str, shot: Path, dom: Path) -> list[str]:
    shot.unlink(missing_ok=True)
    run = chromium(browser, url, shot)
    if run.returncode != 0:
        return [f"chromium exited with {run.returncode}: {run.stderr.strip()[-300:]}"]
    dom.write_text(run.stdout, encoding="utf-8")
    text = page_text(run.stdout)
    problems = [f"the page says {marker!r}" for marker in MISSING_MARKERS if marker in text]
    if not shot.exists():
        problems.append("no screenshot was written")
    path = urllib.parse.urlsplit(url).path
    for prefix, wanted in EXPECTED.items():
        if path.startswith(prefix):
            problems += [f"the page does not show {pattern!r}" for pattern in wanted if not re.search(pattern, text)]
    return problems


def check_page(browser: str, url: str, out: Path, index: int, control: bool = False) -> tuple[list[str], str]:
    """Problems with one page (none when it renders what it is for), and its rendered DOM;
    saves its screenshot and DOM. A ``control`` page is one that must be missing."""
    local_only(url)
    path = urllib.parse.urlsplit(url).path
    name = f"{index:02d}-{re.sub(r'[^a-z0-9]+', '-', path.lower()).strip('-')[:60] or 'root'}"
    shot, dom = out / f"{name}.png", out / f"{name}.html"
    attempt = 0
    while True:
        attempt += 1
        problems = page_problems(browser, url, shot, dom)
        missing = any("the page says" in problem for problem in problems)
        if not problems or missing or control or attempt == ATTEMPTS:
            break
    if control:
        verdict = "ok, missing as it should be" if missing else "FAIL, not recognised as missing"
        print(f"{verdict}: {url}\n     screenshot: {shot}", flush=True)
        return problems, ""
    again = f" (loaded {attempt} times)" if attempt > 1 else ""
    print(f"{'ok  ' if not problems else 'FAIL'} {url}{again}\n     screenshot: {shot}", flush=True)
    for problem in problems:
        print(f"     {problem}", flush=True)
    return problems, dom.read_text(encoding="utf-8") if dom.exists() else ""


def event_feed_links(html: str) -> list[str]:
    """The run report's links to the event feed of a flow run (not the sidebar's /events)."""
    hrefs = (h.replace("&amp;", "&") for h in re.findall(r'<a\b[^>]*\bhref="([^"]+)"', html))
    return [h for h in hrefs if urllib.parse.urlsplit(h).path == "/events" and "resource=prefect.flow-run." in h]


# -- a Prefect server of our own, and the demo -------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(prefect: Path, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        # The UI asks this address for its data; by default it would ask port 4200.
        "PREFECT_UI_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        # The demo's asset events are stored within half a second, not every 5 s.
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.5",
    }
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "wb")
    server = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return server, api_url
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            stop_server(server)
            sys.exit(f"the Prefect server did not start; see {home / 'server.log'}")
        time.sleep(0.5)


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def run_demo(api_url: str) -> list[str]:
    """`python3 dev.py demo` against our server; the URLs it prints."""
    env = {**os.environ, "PREFECT_API_URL": api_url}
    demo = subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), "demo"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    tail = (
        demo.stdout[demo.stdout.rfind("\nSee in the Prefect UI:") :] if "See in the Prefect UI:" in demo.stdout else ""
    )
    print(tail.strip() or demo.stdout[-2000:], flush=True)
    if demo.returncode != 0:
        sys.exit(f"the demo failed (exit {demo.returncode}):\n{demo.stderr[-3000:]}")
    return re.findall(r"https?://\S+", tail)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("urls", nargs="*", help="pages to check (127.0.0.1 only); default: what the demo prints")
    parser.add_argument("--out", type=Path, help="where screenshots and DOMs go (default: a new temporary directory)")
    options = parser.parse_args()
    for url in options.urls:
        local_only(url)
    out = options.out or Path(tempfile.mkdtemp(prefix="dbt-prefect-ui-pages-"))
    out.mkdir(parents=True, exist_ok=True)
    browser = ensure_browser()

    server = home = None
    urls = list(options.urls)
    failed: list[str] = []
    checked = False
    try:
        if not urls:
            sys.path.insert(0, str(ROOT))
            import dev  # stdlib only: sets up .venv, which has the `prefect` command

            dev.ensure_venv()
            home = Path(tempfile.mkdtemp(prefix="dbt-prefect-ui-server-"))
            server, api_url = start_server(dev.BIN / "prefect", home)
            print(f"Prefect server on {api_url.removesuffix('/api')} (state in {home})", flush=True)
            urls = run_demo(api_url)
            if not urls:
                print("the demo printed no Prefect UI page", flush=True)
                return 1
            printed_assets = [url for url in urls if urllib.parse.urlsplit(url).path.rstrip("/").endswith("/assets")]
            if printed_assets:
                print(f"the demo printed an assets page, which the open-source server has not: {printed_assets}")
                return 1
            # The control: the check must see that /assets is missing on this server.
            control = f"{api_url.removesuffix('/api')}/assets"
            missing, _ = check_page(browser, control, out, 0, control=True)
            if not any("the page says" in problem for problem in missing):
                print("the check cannot tell a missing page on this server; it cannot be trusted")
                return 1
        index = 0
        while index < len(urls):
            url = urls[index]
            index += 1
            problems, html = check_page(browser, url, out, index)
            if problems:
                failed.append(url)
            # The run report links the event feed too: that link must work as well.
            for link in event_feed_links(html):
                if link not in urls:
                    print(f"     links to {link}", flush=True)
                    urls.append(local_only(link))
        checked = True
    finally:
        if server is not None:
            stop_server(server)
        if home is not None and checked and not failed:
            shutil.rmtree(home, ignore_errors=True)  # kept otherwise: its server.log tells why
    print(f"\nscreenshots and rendered pages: {out}")
    if failed:
        print(f"{len(failed)} of {len(urls)} pages failed")
        return 1
    print(f"all {len(urls)} pages render")
    return 0


if __name__ == "__main__":
    sys.exit(main())
