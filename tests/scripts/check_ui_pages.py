#!/usr/bin/env python3
"""Open the Prefect UI pages a dbt-prefect user gets in headless Chromium, and check what they show.

    python3 tests/scripts/check_ui_pages.py                    # everything below (a few minutes)
    python3 tests/scripts/check_ui_pages.py URL [URL...]       # check these pages only
    options:
      --out DIR          every screenshot and rendered page (default: a new temporary directory)
      --screenshots DIR  the V2 pages for the documentation, under stable names: flow-run.png,
                         run-report.png (with its lineage picture), task-run-logs.png,
                         event-feed.png, and lineage-statuses.png (the hostile-names
                         build's picture alone); docs/assets/screenshots/ is where the
                         docs take them
      --demo-only        only the demo's pages: no other project, no synthetic large build

Without URLs it starts its own Prefect server on a free 127.0.0.1 port (state in a
temporary directory, stopped at the end) and:

1. runs `python3 dev.py demo` against it. Every page the demo prints must be in the UI the
   server gives by default (its /ui-settings: V2, under `/v2/`, unless turned off);
2. checks the V2 pages: the flow run, the run report, the event feed of the run's asset
   events, one asset's events, and the task run a click on a node of the lineage picture
   opens (with its dbt log lines); then the same run's V1 pages. With V2 turned off
   (PREFECT_SERVER_UI_V2_ENABLED=false) the demo's pages are V1's, and the task run is the
   one the picture's mermaid source links;
3. builds more projects in flows, and checks their run reports: a project with hostile
   names (tests/projects/hostile_names) and the shared real projects
   (/work/shared/realprojects, when present: dbt_utils, dbt_project_evaluator);
4. publishes the lineage pictures of synthetic builds of 1,000 and 5,000 nodes, and checks
   that they are drawn, bounded, and how long they take.

A page fails when it is missing (a single-page app answers 200 for any path, so a page
counts as missing when the rendered page says so, or when it cannot reach the API), when
it lacks what it is for, and for a run report:
- a lineage picture that mermaid did not draw (its "Syntax error" box, or the UI's "Failed
  to render mermaid diagram"), or that lacks a node it should have: every seed, model and
  snapshot dbt ran (dbt's run_results.json says which), with its status in words; in a
  folded picture, every node that failed;
- text or lines of the picture that do not stand out from their background in the light
  or the dark theme (WCAG contrast: 4.5 for the labels, 3 for the edges);
- a table wider than the page's content column, at a 1,400 px wide window.
As a control, `/assets` must be found missing: the open-source server has no assets page.

Chromium comes from Debian's packages: installed with apt-get when missing and run as root.
The script drives it through the DevTools protocol, with the `websockets` client of the
project's .venv (it re-runs itself there). Only 127.0.0.1 addresses are opened. Not part
of the test suite; .ci/run runs it.
"""

from __future__ import annotations

import argparse
import base64
import json
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REAL_PROJECTS = Path(os.environ.get("DBT_PREFECT_REAL_PROJECTS", "/work/shared/realprojects"))
BROWSER_NAMES = ("chromium", "chromium-browser")
WIDTH = 1400
HEIGHT = 1000
PAGE_TIMEOUT = 45.0

# Text the UI renders instead of a page: its 404 route, or its banner when the API is unreachable.
MISSING_MARKERS = ("Page Not Found", "Page not found", "Can't connect to Server API")
# What mermaid or the UI shows instead of a picture.
DIAGRAM_ERRORS = ("Syntax error", "Failed to render mermaid diagram", "Maximum text size", "Too many edges")
# What each page must show once its data is loaded, by kind of page.
EXPECTED = {
    "flow-run": (r"\d+ Task runs", r"Task Runs", r"Artifacts"),
    "run-report": (r"Lineage", r"Assets \(\d+\)", r"Upstream assets", r"Row count", r"materialized"),
    "event-feed": (r"(?i)asset materialization succeeded",),
    "task-run": (r"\d+ of \d+ (START|OK|PASS|ERROR|FAIL|WARN|SKIP)",),
}
# The V1 UI shows the picture's mermaid source as code.
EXPECTED_V1 = {"run-report": (r"flowchart LR",)}
SCREENSHOT_NAMES = {
    "flow-run": "flow-run.png",
    "run-report": "run-report.png",
    "task-run": "task-run-logs.png",
    "event-feed": "event-feed.png",
}
# The picture of the hostile-names build alone: every status, a failed and a warned test.
PICTURE_SCREENSHOT = "lineage-statuses.png"
# Seeds, models and snapshots: the nodes dbt runs that the picture draws.
PICTURED = ("seed", "model", "snapshot")


def page_kind(url: str) -> tuple[str, str]:
    """(UI version, kind of page) of a UI address."""
    path = urllib.parse.urlsplit(url).path
    version = "v2" if path == "/v2" or path.startswith("/v2/") else "v1"
    path = path.removeprefix("/v2") if version == "v2" else path
    for prefix, kind in (
        ("/runs/flow-run/", "flow-run"),
        ("/runs/task-run/", "task-run"),
        ("/artifacts/artifact/", "run-report"),
        ("/events", "event-feed"),
    ):
        if path.startswith(prefix):
            return version, kind
    return version, "other"


# -- the browser -------------------------------------------------------------------------
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


class Browser:
    """One headless Chromium in a fresh profile, driven over the DevTools protocol."""

    def __init__(self, executable: str) -> None:
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",  # root in a container has no user namespace for the sandbox
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                f"--window-size={WIDTH},{HEIGHT}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                sys.exit("Chromium did not start (no DevToolsActivePort)")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        self.socket = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.counter = 0
        self.send("Page.enable")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.counter += 1
        self.socket.send(json.dumps({"id": self.counter, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=180))
            if message.get("id") == self.counter:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(details.get("exception", {}).get("description") or details.get("text"))
        return result["result"].get("value")

    def window(self, height: int = HEIGHT, dark: bool = False) -> None:
        self.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=height, deviceScaleFactor=1, mobile=False)
        scheme = "dark" if dark else "light"
        self.send("Emulation.setEmulatedMedia", features=[{"name": "prefers-color-scheme", "value": scheme}])

    def open(self, url: str, dark: bool = False) -> None:
        self.send("Network.clearBrowserCookies")
        self.window(dark=dark)
        self.send("Page.navigate", url=local_only(url))

    def wait_for(self, expression: str, timeout: float = PAGE_TIMEOUT) -> Any:
        """Poll ``expression`` until it is truthy, for ``timeout`` seconds at most; its last value."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None  # the page is between documents
            if value:
                return value
            time.sleep(0.2)
        return value

    def click(self, x: float, y: float) -> None:
        """A real click, as a user's mouse gives it."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path, height: int | None = None) -> None:
        """The page at WIDTH px, ``height`` px tall (the window's height by default)."""
        if height is not None:
            self.window(height=height, dark=self.evaluate("matchMedia('(prefers-color-scheme: dark)').matches"))
            time.sleep(0.5)  # a relayout
        # Until two captures a second apart are the same (at most 15 s): the page has
        # settled, charts and pictures drawn.
        shot, previous = self.send("Page.captureScreenshot", format="png")["data"], None
        deadline = time.monotonic() + 15
        while shot != previous and time.monotonic() < deadline:
            time.sleep(1)
            previous, shot = shot, self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(shot))

    def screenshot_picture(self, path: Path) -> None:
        """The lineage picture alone, at its size on the page."""
        main = self.evaluate("Math.ceil((document.querySelector('main') || document.body).scrollHeight)") or HEIGHT
        self.window(height=int(main) + 200, dark=self.evaluate("matchMedia('(prefers-color-scheme: dark)').matches"))
        time.sleep(0.5)
        box = self.evaluate(
            "(() => { const r = document.querySelector('svg[aria-roledescription^=\"flowchart\"]').getBoundingClientRect();"
            " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()"
        )
        shot = self.send("Page.captureScreenshot", format="png", clip={**box, "scale": 1})
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        if getattr(self, "socket", None) is not None:
            self.socket.close()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        shutil.rmtree(self.profile, ignore_errors=True)


# -- what the pages show, read in the page ----------------------------------------------
PAGE_TEXT = "document.body ? document.body.innerText : ''"

# The lineage picture of a run report: its SVG's node labels (one line per <br>), links,
# and any error mermaid or the UI shows instead.
DIAGRAM_STATE = """(() => {
  const text = document.body ? document.body.innerText : '';
  const svgs = [...document.querySelectorAll('svg[aria-roledescription^="flowchart"]')];
  const nodes = svgs.flatMap(svg => [...svg.querySelectorAll('g.node')].map(node => {
    const label = node.querySelector('.nodeLabel');
    const link = node.closest('a');
    return {
      lines: label ? label.innerText.split('\\n').map(s => s.trim()).filter(Boolean) : [],
      href: link ? (link.getAttribute('href') || link.getAttribute('xlink:href')) : null,
    };
  }));
  return {svgs: svgs.length, nodes, edges: svgs.reduce((n, s) => n + s.querySelectorAll('.flowchart-link').length, 0),
          errors: ERRORS.filter(e => text.includes(e)),
          markdown: !!document.querySelector('.prose h1, article.markdown-renderer h1')};
})()"""

# WCAG contrast of each node's label against its box, and of each edge against the panel.
CONTRAST = """(() => {
  // Any CSS colour (the UI's are oklch) as sRGB, the way the browser paints it.
  const canvas = document.createElement('canvas'); canvas.width = canvas.height = 1;
  const paint = canvas.getContext('2d', {willReadFrequently: true});
  const rgb = c => { if (!c || c === 'none') return null; paint.clearRect(0, 0, 1, 1); paint.fillStyle = '#000000';
    paint.fillStyle = c; paint.fillRect(0, 0, 1, 1); const d = paint.getImageData(0, 0, 1, 1).data;
    return {c: [d[0], d[1], d[2]], a: d[3] / 255}; };
  const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const background = e => { for (; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
    if (c && c.a > 0.5) return c.c; } return [255, 255, 255]; };
  const svg = document.querySelector('svg[aria-roledescription^="flowchart"]');
  if (!svg) return ['no picture'];
  const panel = background(svg);
  const low = [];
  for (const node of svg.querySelectorAll('g.node')) {
    const shape = node.querySelector('rect, path, polygon');
    const label = node.querySelector('.nodeLabel');
    if (!shape || !label) continue;
    const fill = rgb(getComputedStyle(shape).fill), color = rgb(getComputedStyle(label).color);
    if (!fill || !color) { low.push(`${label.innerText}: no colour to compare`); continue; }
    const r = ratio(fill.c, color.c);
    if (r < 4.5) low.push(`label ${JSON.stringify(label.innerText)}: contrast ${r.toFixed(2)} against its box`);
  }
  for (const edge of [...svg.querySelectorAll('.flowchart-link')].slice(0, 50)) {
    const stroke = rgb(getComputedStyle(edge).stroke);
    const r = stroke ? ratio(stroke.c, panel) : 0;
    if (r < 3) { low.push(`edges: contrast ${r.toFixed(2)} against the panel ${JSON.stringify(panel)}`); break; }
  }
  return low;
})()"""

# Tables wider than the markdown's content column, or that scroll sideways inside it.
TABLE_OVERFLOW = """(() => {
  const column = document.querySelector('.prose, article.markdown-renderer');
  if (!column) return ['no markdown content column'];
  const right = column.getBoundingClientRect().right;
  const problems = [];
  for (const table of column.querySelectorAll('table')) {
    let title = '';
    for (let e = table.closest('.p-table') || table; e && !title; e = e.previousElementSibling)
      if (/^H[1-6]$/.test(e.tagName)) title = e.innerText;
    const box = table.getBoundingClientRect();
    if (box.right > right + 1)
      problems.push(`table "${title}" is ${Math.round(box.width)} px wide: ${Math.round(box.right - right)} px past the content column`);
    for (let e = table.parentElement; e && e !== column.parentElement; e = e.parentElement)
      if (e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible') {
        problems.push(`table "${title}" scrolls sideways: ${e.scrollWidth} px in ${e.clientWidth} px`); break; }
  }
  return problems;
})()"""


def ready_expression(kind: str, version: str) -> str:
    """True once the page shows what it is for (or says it is missing)."""
    patterns = [*EXPECTED.get(kind, ()), *(EXPECTED_V1.get(kind, ()) if version == "v1" else ())]
    regexes = json.dumps([p for p in patterns])
    markers = json.dumps(list(MISSING_MARKERS))
    diagram = ""
    if kind == "run-report" and version == "v2":
        diagram = (
            "&& !!(document.querySelector('svg[aria-roledescription^=\"flowchart\"] g.node') "
            f"|| {json.dumps(list(DIAGRAM_ERRORS))}.some(e => t.includes(e)))"
        )
    if not patterns:
        return f"(() => {{ const t = {PAGE_TEXT}; return {markers}.some(m => t.includes(m)); }})()"
    return (
        f"(() => {{ const t = {PAGE_TEXT}; if ({markers}.some(m => t.includes(m))) return true;"
        f" return {regexes}.every(p => new RegExp(p.replace('(?i)', ''), p.startsWith('(?i)') ? 'i' : '').test(t)) {diagram}; }})()"
    )


# -- what a run report's picture must hold ---------------------------------------------------
@dataclass
class Expected:
    """What a run report's picture must draw: dbt's results for the run (from run_results.json)."""

    results: list[tuple[str, str, str]]  # (resource type, name as pictured, status)
    labels: tuple[str, ...] = ()  # more boxes it must have, by their first line (sources read)

    @classmethod
    def from_run_results(cls, path: Path, labels: tuple[str, ...] = ()) -> Expected:
        results = []
        for entry in json.loads(path.read_text(encoding="utf-8"))["results"]:
            parts = entry["unique_id"].split(".")
            if parts[0] in PICTURED:
                results.append((parts[0], ".".join(parts[2:]), entry["status"]))
        return cls(results, labels)


FOLD_LABEL = re.compile(r"^(.*) · ([\d,]+) folded$")


def diagram_problems(state: dict[str, Any], expected: Expected | None) -> list[str]:
    from dbt_prefect.runner.report.mermaid import short_name  # how the picture shortens a name

    problems = [f"the lineage picture shows {error!r}" for error in state.get("errors", [])]
    if state.get("svgs") != 1:
        problems.append(f"the run report has {state.get('svgs')} lineage pictures, not 1")
    if problems or expected is None:
        return problems
    boxes = [node["lines"] for node in state["nodes"] if node["lines"]]
    folds = [lines for lines in boxes if FOLD_LABEL.match(lines[0])]
    drawn: dict[str, list[str]] = {}  # first line -> status lines ("model · ✓ success")
    for lines in boxes:
        if not FOLD_LABEL.match(lines[0]):
            drawn.setdefault(lines[0], []).append(lines[1] if len(lines) > 1 else "")
    for label in expected.labels:
        if label not in drawn:
            problems.append(f"the lineage picture lacks {label!r}")
    folded = 0
    for lines in folds:
        counted = FOLD_LABEL.match(lines[0])
        assert counted is not None
        folded += int(counted.group(2).replace(",", ""))
    for resource_type, name, status in expected.results:
        must = not folds or status in ("error", "fail", "runtime error", "warn")
        seen = drawn.get(short_name(name), [])
        if not seen:
            if must:
                problems.append(f"the lineage picture lacks {resource_type} {name!r} ({status})")
        elif not any(words.startswith(f"{resource_type} · ") and words.endswith(f" {status}") for words in seen):
            problems.append(f"the lineage picture shows {name!r} without its status {status!r}: {seen}")
    drawn_count = sum(len(v) for v in drawn.values())
    if folds and drawn_count + folded < len(expected.results):
        problems.append(
            f"the picture draws {drawn_count} and folds {folded}: fewer than the {len(expected.results)} nodes run"
        )
    return problems


# -- checking one page ------------------------------------------------------------------------
@dataclass
class Checked:
    url: str
    problems: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


def check_page(
    browser: Browser,
    url: str,
    out: Path,
    name: str,
    expected: Expected | None = None,
    screenshot_to: Path | None = None,
    control: bool = False,
    picture_to: Path | None = None,
) -> Checked:
    """Open ``url`` and check it shows what it is for (see the module's docstring)."""
    version, kind = page_kind(url)
    checked = Checked(url)
    started = time.monotonic()
    browser.open(url)
    browser.wait_for(ready_expression(kind, version), timeout=20 if kind == "other" else PAGE_TIMEOUT)
    text = browser.evaluate(PAGE_TEXT) or ""
    (out / f"{name}.txt").write_text(text, encoding="utf-8")
    problems = [f"the page says {marker!r}" for marker in MISSING_MARKERS if marker in text]
    if control:
        browser.screenshot(out / f"{name}.png")
        verdict = "ok, missing as it should be" if problems else "FAIL, not recognised as missing"
        print(f"{verdict}: {url}", flush=True)
        checked.problems = problems
        return checked
    patterns = [*EXPECTED.get(kind, ()), *(EXPECTED_V1.get(kind, ()) if version == "v1" else ())]
    for pattern in patterns:
        flags = re.I if pattern.startswith("(?i)") else 0
        if not re.search(pattern.removeprefix("(?i)"), text, flags):
            problems.append(f"the page does not show {pattern!r}")
    height = None
    if kind == "run-report" and not problems:
        if version == "v2":
            state = browser.evaluate(DIAGRAM_STATE.replace("ERRORS", json.dumps(list(DIAGRAM_ERRORS))))
            state["seconds"] = round(time.monotonic() - started, 1)
            checked.state = state
            problems += diagram_problems(state, expected)
            if not problems:
                problems += [f"light theme: {p}" for p in browser.evaluate(CONTRAST)]
                # The picture's bottom, for a screenshot that shows it.
                bottom = browser.evaluate(
                    "(() => { const s = document.querySelector('svg[aria-roledescription^=\"flowchart\"]');"
                    " return s ? Math.ceil(s.getBoundingClientRect().bottom) : 0; })()"
                )
                height = min(max(HEIGHT, bottom + 60), 2400)
        problems += browser.evaluate(TABLE_OVERFLOW)
    browser.screenshot(out / f"{name}.png", height)
    if kind == "run-report" and version == "v2" and not problems:
        # The same page in the dark theme: the picture must read there too.
        browser.open(url, dark=True)
        browser.wait_for(ready_expression(kind, version))
        problems += [f"dark theme: {p}" for p in browser.evaluate(CONTRAST)]
        browser.screenshot(out / f"{name}-dark.png", height)
    if screenshot_to is not None and not problems:
        shutil.copyfile(out / f"{name}.png", screenshot_to / SCREENSHOT_NAMES[kind])
    if picture_to is not None and not problems:
        browser.open(url)
        browser.wait_for(ready_expression(kind, version))
        browser.screenshot_picture(picture_to)
    checked.problems = problems
    extra = ""
    if checked.state.get("svgs"):
        extra = f" (picture: {len(checked.state['nodes'])} boxes, {checked.state['edges']} edges)"
    print(f"{'ok  ' if not problems else 'FAIL'} {url}{extra}\n     screenshot: {out / f'{name}.png'}", flush=True)
    for problem in problems:
        print(f"     {problem}", flush=True)
    return checked


def follow_a_node(
    browser: Browser, report_url: str, node_name: str, out: Path, name: str, screenshot_to: Path | None
) -> Checked:
    """Click ``node_name`` in the report's picture, as a user would: it must open that
    node's task run, in the same UI, with its dbt log lines."""
    version, _ = page_kind(report_url)
    browser.open(report_url)
    browser.wait_for(ready_expression("run-report", version))
    target = browser.evaluate(
        """(() => {
      const node = [...document.querySelectorAll('svg[aria-roledescription^="flowchart"] g.node')]
        .find(n => (n.querySelector('.nodeLabel')?.innerText || '').split('\\n')[0].trim() === NAME);
      if (!node) return null;
      node.scrollIntoView({block: 'center'});
      const box = node.getBoundingClientRect();
      const link = node.closest('a');
      return {x: box.x + box.width / 2, y: box.y + box.height / 2, href: link && (link.getAttribute('href') || link.getAttribute('xlink:href'))};
    })()""".replace("NAME", json.dumps(node_name))
    )
    checked = Checked(report_url)
    if not target or not target.get("href"):
        checked.problems = [f"the picture has no linked node {node_name!r}"]
        print(f"FAIL click on {node_name!r} in {report_url}: {checked.problems[0]}", flush=True)
        return checked
    before = browser.evaluate("location.href")
    browser.click(target["x"], target["y"])
    landed = browser.wait_for(f"location.href !== {json.dumps(before)} && location.href", timeout=20)
    if landed != target["href"]:
        checked.problems = [f"a click on {node_name!r} opened {landed!r}, not its link {target['href']!r}"]
    elif page_kind(landed) != (version, "task-run"):
        checked.problems = [f"a click on {node_name!r} opened {landed}, which is not a {version} task run page"]
    if checked.problems:
        print(f"FAIL click on {node_name!r}: {checked.problems[0]}", flush=True)
        return checked
    print(f"ok   a click on {node_name!r} in the picture opens {landed}", flush=True)
    page = check_page(browser, landed, out, name, screenshot_to=screenshot_to)
    if not page.problems and not (browser.evaluate(PAGE_TEXT) or "").count(node_name):
        page.problems.append(f"the task run page does not name {node_name!r}")
    return page


def follow_a_link_in_the_source(browser: Browser, report_url: str, node_name: str, out: Path, name: str) -> Checked:
    """On a server whose default UI is V1, the report shows the picture's mermaid source
    and says that V2 draws it; the source's link for ``node_name`` must open its task run."""
    browser.open(report_url)
    browser.wait_for(ready_expression("run-report", "v1"))
    text = browser.evaluate(PAGE_TEXT) or ""
    checked = Checked(report_url)
    if "Prefect's V1 UI shows the picture as its mermaid source" not in text:
        checked.problems.append("the V1 report does not say that the V2 UI draws the picture")
    box = re.search(r'(n\d+)[\[(]+"' + re.escape(node_name) + "<br/>", text)
    link = re.search(rf'click {box.group(1)} href "([^"]+)"', text) if box else None
    if link is None:
        checked.problems.append(f"the picture's source has no link for {node_name!r}")
    elif page_kind(link.group(1)) != ("v1", "task-run"):
        checked.problems.append(f"the link for {node_name!r} is not a V1 task run page: {link.group(1)}")
    if checked.problems:
        print(f"FAIL {report_url}: {checked.problems[0]}", flush=True)
        return checked
    assert link is not None
    print(f"ok   the picture's source links {node_name!r} to {link.group(1)}", flush=True)
    return check_page(browser, link.group(1), out, name)


def v1_address(url: str) -> str:
    """The V1 page showing what a V2 address shows (the event feed takes other parameters)."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path.removeprefix("/v2")
    if path != "/events":
        return urllib.parse.urlunsplit(parts._replace(path=path))
    query = dict(urllib.parse.parse_qsl(parts.query))
    params = [
        ("resource", json.loads(query["resource"])[0]),
        ("events", json.loads(query["events"])[0]),
        ("type", "range"),
        ("startDate", query["start"]),
        ("endDate", query["end"]),
    ]
    return urllib.parse.urlunsplit(parts._replace(path=path, query=urllib.parse.urlencode(params, safe=":*")))


# -- a Prefect server of our own, and runs to look at --------------------------------------
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


def default_ui(api_url: str) -> str:
    """The UI the server gives a browser with no saved preference (its /ui-settings)."""
    with urllib.request.urlopen(f"{api_url.removesuffix('/api')}/ui-settings", timeout=10) as response:
        return str(json.load(response).get("default_ui") or "v1")


def run_demo(api_url: str) -> list[str]:
    """`python3 dev.py demo` against our server; the URLs it prints. Run by another venv's
    Python (Prefect 3.8's: `.venv-prefect38/bin/python tests/scripts/check_ui_pages.py`),
    the same two steps run in that venv: the demo's flow, then the links it prints."""
    sys.path.insert(0, str(ROOT))
    import dev  # stdlib only

    env = {**os.environ, **dev.QUIET_ENV, "PREFECT_API_URL": api_url}
    if Path(sys.prefix).resolve() == dev.VENV.resolve():
        demo = subprocess.run(
            [sys.executable, str(ROOT / "dev.py"), "demo"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        stdout, stderr, code = demo.stdout, demo.stderr, demo.returncode
    else:
        started = time.time()
        flow = subprocess.run(
            [sys.executable, str(ROOT / "integration_project" / "flows" / "build_shop.py")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        links = subprocess.run(
            [sys.executable, "-c", dev.DEMO_LINKS, "build-shop", str(started)], env=env, capture_output=True, text=True
        )
        stdout = flow.stdout + "\nSee in the Prefect UI:\n" + links.stdout
        stderr, code = flow.stderr + links.stderr, flow.returncode or links.returncode
    tail = stdout[stdout.rfind("\nSee in the Prefect UI:") :] if "See in the Prefect UI:" in stdout else ""
    print(tail.strip() or stdout[-2000:], flush=True)
    if code != 0:
        sys.exit(f"the demo failed (exit {code}):\n{stderr[-3000:]}")
    return re.findall(r"https?://\S+", tail)


def build_in_flow(project: Path, api_url: str) -> dict[str, Any]:
    """`dbt build` of ``project`` by PrefectDbtRunner in a flow, in a process of its own
    (see ``_build_main``); the run report's artifact id."""
    env = {**os.environ, "PREFECT_API_URL": api_url, "DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    env["DBT_DUCKDB_PATH"] = str(project / "check.duckdb")
    run = subprocess.run(
        [sys.executable, __file__, "--build-in-flow", str(project)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if run.returncode != 0 or not lines:
        sys.exit(f"building {project} in a flow failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
    return json.loads(lines[-1])


def _build_main(project: Path) -> int:
    from prefect import flow

    from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings

    @flow(name=f"check-ui-{project.name}")
    def build() -> dict[str, Any]:
        runner = PrefectDbtRunner(
            settings=PrefectDbtSettings(project_dir=project, profiles_dir=project), raise_on_failure=False
        )
        runner.invoke(["build"])
        report = runner.last_report
        assert report is not None and report.artifact_id is not None, "no run report was published"
        return {"report_id": str(report.artifact_id), "flow_run_id": str(report.flow_run_id)}

    print(json.dumps(build()), flush=True)
    return 0


def real_project(name: str, destination: Path) -> Path | None:
    """A private copy of one of the shared real projects, ready to build (see its README)."""
    if not (REAL_PROJECTS / "use.sh").exists():
        return None
    run = subprocess.run(
        ["bash", str(REAL_PROJECTS / "use.sh"), name, str(destination), sys.executable],
        capture_output=True,
        text=True,
        env={**os.environ, "DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
    )
    if run.returncode != 0:
        sys.exit(f"use.sh {name} failed:\n{run.stderr[-2000:]}")
    project = Path(run.stdout.strip().splitlines()[-1])
    if not (project / "profiles.yml").exists():
        # dbt_utils' integration tests come without one: the DuckDB profile the other project has.
        shutil.copyfile(
            REAL_PROJECTS / "dbt_project_evaluator" / "integration_tests" / "profiles.yml", project / "profiles.yml"
        )
    return project


def publish_synthetic(api_url: str, size: int) -> tuple[str, str]:
    """A run report holding only the lineage picture of a synthetic build of ``size`` nodes
    (tests/support/lineage_graphs.py), published as a markdown artifact; its id, and the
    picture's mermaid text."""
    sys.path.insert(0, str(ROOT / "tests"))
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from dbt_prefect.runner.report import RunReport, UiPages, render_markdown
    from support.lineage_graphs import pipeline_build

    failures = [(p, 4) for p in range(0, size // 10, 9)]
    report = RunReport(project="synthetic", command="build", lineage=pipeline_build(size // 10, failed=failures))
    report.ui = UiPages(f"{api_url.removesuffix('/api')}/v2", "v2", served=True)
    data = render_markdown(report)
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        artifact = client.create_artifact(
            artifact=ArtifactCreate(
                key=f"lineage-{size}-nodes", type="markdown", data=data, description=f"{size} nodes"
            )
        )
    mermaid = data.split("```mermaid\n", 1)[1].split("\n```", 1)[0]
    print(f"synthetic build of {size:,} nodes: {len(mermaid):,} characters of mermaid", flush=True)
    return str(artifact.id), mermaid


@contextmanager
def own_server() -> Iterator[str]:
    """A server of the Prefect this script runs with (the venv of its Python)."""
    import prefect

    home = Path(tempfile.mkdtemp(prefix="dbt-prefect-ui-server-"))
    server, api_url = start_server(Path(sys.executable).parent / "prefect", home)
    print(f"Prefect {prefect.__version__} server on {api_url.removesuffix('/api')} (state in {home})", flush=True)
    ok = False
    try:
        yield api_url
        ok = True
    finally:
        stop_server(server)
        if ok:
            shutil.rmtree(home, ignore_errors=True)  # kept otherwise: its server.log tells why


# -- the whole check ----------------------------------------------------------------------------
def check_everything(browser: Browser, api_url: str, out: Path, shots: Path | None, demo_only: bool) -> list[Checked]:
    ui = api_url.removesuffix("/api")
    results: list[Checked] = []
    urls = run_demo(api_url)
    if not urls:
        return [Checked("(demo)", ["the demo printed no Prefect UI page"])]
    kinds = {page_kind(url)[1]: url for url in urls}
    wanted = default_ui(api_url)
    wrong = [url for url in urls if page_kind(url)[0] != wanted or page_kind(url)[1] == "other"]
    if wrong or set(kinds) != {"flow-run", "run-report", "event-feed"}:
        return [
            Checked(
                "(demo)", [f"the demo printed {urls}: not the flow run, run report and event feed of the {wanted} UI"]
            )
        ]
    print(f"The server's default UI is {wanted}; the demo's pages are in it.", flush=True)
    control = check_page(browser, f"{ui}/assets", out, "00-assets", control=True)
    if not control.problems:
        return [Checked(f"{ui}/assets", ["the check cannot tell a missing page on this server; it cannot be trusted"])]
    demo_results = Expected.from_run_results(
        ROOT / "integration_project" / "target" / "run_results.json", ("payments_app.payments",)
    )
    order = ("flow-run", "run-report", "event-feed")
    for index, kind in enumerate(order, start=1):
        url = kinds[kind]
        results.append(
            check_page(
                browser, url, out, f"{index:02d}-{wanted}-{kind}", demo_results if kind == "run-report" else None, shots
            )
        )
    # The run report links its event feed, in the same UI: that page must work as well.
    browser.open(kinds["run-report"])
    browser.wait_for(ready_expression("run-report", wanted))
    links = browser.evaluate(
        "[...document.querySelectorAll('.prose a, article.markdown-renderer a')].map(a => a.href)"
        ".filter(h => /\\/events\\?/.test(h) && h.includes('prefect.flow-run.'))"
    )
    if not links:
        results.append(Checked(kinds["run-report"], ["the run report does not link its asset events"]))
    for link in links[:1]:
        print(f"     the run report links {link}", flush=True)
        if page_kind(link) != (wanted, "event-feed"):
            results.append(Checked(link, [f"the run report's event feed link is not in the {wanted} UI"]))
        else:
            results.append(check_page(browser, link, out, f"03-{wanted}-event-feed-from-report"))
    # Each asset's key links to that asset's own events.
    browser.open(kinds["run-report"])
    browser.wait_for(ready_expression("run-report", wanted))
    own = browser.evaluate(
        "[...document.querySelectorAll('.prose table a, article.markdown-renderer table a')].map(a => a.href)"
    )
    if not own:
        results.append(Checked(kinds["run-report"], ["the Assets table does not link the assets' events"]))
    else:
        print(f"     the Assets table links {own[0]}", flush=True)
        results.append(check_page(browser, own[0], out, f"03-{wanted}-one-assets-events"))
    if wanted == "v2":
        results.append(follow_a_node(browser, kinds["run-report"], "orders", out, f"04-{wanted}-task-run", shots))
    else:
        results.append(follow_a_link_in_the_source(browser, kinds["run-report"], "orders", out, "04-v1-task-run"))
    if wanted == "v2":
        for index, kind in enumerate(order, start=5):
            results.append(check_page(browser, v1_address(kinds[kind]), out, f"{index:02d}-v1-{kind}"))
    if demo_only:
        return results
    workspace = Path(tempfile.mkdtemp(prefix="dbt-prefect-ui-projects-"))
    sys.path.insert(0, str(ROOT / "tests"))
    from support.hostile_names import make_hostile_copy

    projects: list[tuple[str, Path, tuple[str, ...]]] = [
        ("hostile_names", make_hostile_copy(workspace), ('app.v2-data.events"raw"',))
    ]
    for name in ("dbt_utils", "dbt_project_evaluator"):
        project = real_project(name, workspace / name)
        if project is None:
            print(f"skipped: the shared real project {name} is not at {REAL_PROJECTS}", flush=True)
            continue
        projects.append((name, project, ()))
    for index, (name, project, labels) in enumerate(projects, start=10):
        print(f"building {name} in a flow", flush=True)
        ids = build_in_flow(project, api_url)
        expected = Expected.from_run_results(project / "target" / "run_results.json", labels)
        url = (
            f"{ui}/v2/artifacts/artifact/{ids['report_id']}"
            if wanted == "v2"
            else f"{ui}/artifacts/artifact/{ids['report_id']}"
        )
        picture = shots / PICTURE_SCREENSHOT if shots is not None and name == "hostile_names" else None
        results.append(check_page(browser, url, out, f"{index:02d}-{name}-run-report", expected, picture_to=picture))
    if wanted == "v2":
        for index, size in enumerate((1000, 5000), start=20):
            artifact, mermaid = publish_synthetic(api_url, size)
            page = check_page_synthetic(
                browser, f"{ui}/v2/artifacts/artifact/{artifact}", mermaid, out, f"{index:02d}-synthetic-{size}"
            )
            results.append(page)
    shutil.rmtree(workspace, ignore_errors=True)
    return results


# Draws ``TEXT`` three times with the UI's own mermaid, configured as the UI configures it
# (lazy-markdown in Prefect 3.9.1's V2 bundle): the milliseconds each took.
MERMAID_TIMES = """(async () => {
  const chunk = performance.getEntriesByType('resource').map(e => e.name).find(n => n.includes('vendor-mermaid'));
  if (!chunk) return null;
  const mermaid = (await import(chunk)).t.default;
  mermaid.initialize({startOnLoad: false, securityLevel: 'strict', theme: 'base',
                      flowchart: {useMaxWidth: true, padding: 16, curve: 'basis'}});
  const times = [];
  for (let i = 0; i < 3; i++) {
    const start = performance.now();
    await mermaid.render(`timing-${i}-${Date.now()}`, TEXT);
    times.push(performance.now() - start);
  }
  return times;
})()"""


def check_page_synthetic(browser: Browser, url: str, mermaid: str, out: Path, name: str) -> Checked:
    """A synthetic large build's picture: drawn, at most about 150 boxes; how long the
    UI's mermaid takes to draw it (printed, not judged: the machine may be busy)."""
    checked = Checked(url)
    browser.open(url)
    browser.wait_for("!!document.querySelector('.prose h1')")
    started = time.monotonic()
    browser.wait_for(
        "!!document.querySelector('svg[aria-roledescription^=\"flowchart\"] g.node') || "
        + json.dumps(list(DIAGRAM_ERRORS))
        + ".some(e => document.body.innerText.includes(e))"
    )
    seconds = time.monotonic() - started
    state = browser.evaluate(DIAGRAM_STATE.replace("ERRORS", json.dumps(list(DIAGRAM_ERRORS))))
    checked.problems = diagram_problems(state, None)
    if not checked.problems and len(state["nodes"]) > 160:
        checked.problems.append(f"the picture has {len(state['nodes'])} boxes, more than about 150")
    if not checked.problems and not any(FOLD_LABEL.match(n["lines"][0]) for n in state["nodes"] if n["lines"]):
        checked.problems.append("the picture of a large build folds nothing")
    browser.screenshot(out / f"{name}.png", 2000)
    times = None
    if not checked.problems:
        try:
            times = browser.evaluate(MERMAID_TIMES.replace("TEXT", json.dumps(mermaid)))
        except RuntimeError as exc:
            print(f"     could not time mermaid alone: {exc}", flush=True)
    timed = f", mermaid alone {min(times) / 1000:.1f} s (best of 3)" if times else ""
    print(
        f"{'ok  ' if not checked.problems else 'FAIL'} {url} ({len(state['nodes'])} boxes, {state['edges']} edges, "
        f"drawn {seconds:.1f} s after the markdown{timed})\n     screenshot: {out / f'{name}.png'}",
        flush=True,
    )
    for problem in checked.problems:
        print(f"     {problem}", flush=True)
    return checked


def in_project_venv() -> None:
    """Run again in the project's .venv (set up if needed), which has the websockets client."""
    try:
        import websockets  # noqa: F401

        import dbt_prefect  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT))
        import dev

        dev.ensure_venv()
        os.execv(str(dev.PYTHON), [str(dev.PYTHON), __file__, *sys.argv[1:]])


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--build-in-flow":
        return _build_main(Path(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("urls", nargs="*", help="pages to check (127.0.0.1 only); default: everything")
    parser.add_argument(
        "--out", type=Path, help="where screenshots and page texts go (default: a new temporary directory)"
    )
    parser.add_argument("--screenshots", type=Path, help="write the V2 pages' screenshots for the docs here")
    parser.add_argument("--demo-only", action="store_true", help="only the demo's pages")
    options = parser.parse_args()
    for url in options.urls:
        local_only(url)
    in_project_venv()
    out = options.out or Path(tempfile.mkdtemp(prefix="dbt-prefect-ui-pages-"))
    out.mkdir(parents=True, exist_ok=True)
    if options.screenshots:
        options.screenshots.mkdir(parents=True, exist_ok=True)
    browser = Browser(ensure_browser())
    results: list[Checked] = []
    try:
        if options.urls:
            results = [check_page(browser, url, out, f"{i:02d}-page") for i, url in enumerate(options.urls, start=1)]
        else:
            with own_server() as api_url:
                results = check_everything(browser, api_url, out, options.screenshots, options.demo_only)
    finally:
        browser.close()
    failed = [r for r in results if r.problems]
    print(f"\nscreenshots and page texts: {out}")
    if options.screenshots:
        stable = {*SCREENSHOT_NAMES.values(), PICTURE_SCREENSHOT}
        written = sorted(p.name for p in options.screenshots.glob("*.png") if p.name in stable)
        print(f"screenshots for the docs in {options.screenshots}: {', '.join(written)}")
        if not failed and len(written) < len(SCREENSHOT_NAMES) + (0 if options.demo_only else 1):
            print("not every screenshot for the docs was written")
            return 1
    if failed:
        print(f"{len(failed)} of {len(results)} checks failed:")
        for result in failed:
            print(f"  {result.url}: {result.problems[0]}")
        return 1
    print(f"all {len(results)} checks pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
