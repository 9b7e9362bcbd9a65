"""The ``dbt-prefect`` command's live progress: node counts, a bar and the running nodes.

Live (rich) on an interactive terminal; plain lines in CI, in pipes and on dumb terminals.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from dbt_prefect.model.nodes import node_from_node_info
from dbt_prefect.model.statuses import SUMMARY_BUCKETS, classify
from dbt_prefect.model.translator import DbtPrefectTranslator


def live_terminal() -> bool:
    """Live progress on an interactive terminal; plain lines in CI, in pipes and on dumb terminals."""
    ci = os.environ.get("CI", "").strip().lower()
    if ci not in ("", "0", "false", "no"):
        return False
    if os.environ.get("TERM", "") == "dumb":
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def console_logs_to(display: ProgressDisplay) -> Iterator[None]:
    """Prefect's console handler would print every dbt line under the progress display.

    While the command runs, those lines only go to the Prefect API (the flow run's logs)
    and to logs/dbt.log; warnings from Prefect and dbt-prefect themselves are printed
    through the display.
    """
    root = logging.getLogger()
    terminal = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    consoles = [
        h for h in root.handlers if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in terminal
    ]
    for handler in consoles:
        root.removeHandler(handler)
    display_handler = _DisplayLogHandler(display)
    root.addHandler(display_handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for console in consoles:
            root.addHandler(console)


class _DisplayLogHandler(logging.Handler):
    _RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")

    def __init__(self, display: ProgressDisplay) -> None:
        super().__init__(logging.WARNING)
        self._display = display

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(self._RUN_LOGGERS):
            return  # dbt's own lines and the flow engine's messages: in the flow run's logs
        try:
            self._display.line(f"{record.levelname}: {record.getMessage()}")
        except Exception:
            pass


# -- progress ------------------------------------------------------------------------
_NODE_START, _NODE_FINISHED = "NodeStart", "NodeFinished"
# dbt events that carry the number of nodes the command will run ("12 of 36 ...").
# LogHookStartLine/LogHookEndLine carry a count of hooks instead and are left out.
_TOTAL_EVENTS = frozenset(
    {
        "LogStartLine",
        "SkippingDetails",
        "LogSkipBecauseError",
        "LogNodeResult",
        "LogModelResult",
        "LogSnapshotResult",
        "LogSeedResult",
        "LogFreshnessResult",
        "LogNodeNoOpResult",
        "LogFunctionResult",
    }
)
_STOP = object()
# Per bucket of dbt's closing line (model/statuses.py).
_STYLES = {"PASS": "green", "WARN": "yellow", "ERROR": "red", "SKIP": "bright_black", "NO-OP": "bright_black"}
_MAX_RUNNING_SHOWN = 3


class ProgressDisplay:
    """Counts dbt's nodes as they start and finish, and shows it live or as plain lines.

    ``callback`` is handed to ``invoke(callbacks=[...])``; dbt calls it from its worker
    threads for every event, so it only queues the few events that matter. One thread
    turns them into counts and lines; in live mode, rich redraws the display from the
    counts several times a second.
    """

    def __init__(self, command: str, project: str, live: bool, translator: DbtPrefectTranslator | None = None) -> None:
        self.command = command
        self.project = project
        self.live = live
        self.translator = translator if translator is not None else DbtPrefectTranslator()
        self.flow_run_name: str | None = None
        self.total: int | None = None
        self.done = 0
        self.counts = dict.fromkeys(SUMMARY_BUCKETS, 0)
        self.running: dict[str, str] = {}
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._finished = False
        self.succeeded = False  # set before the display stops: ✓ or ✗ on the last frame
        self._live: Any = None
        self.console: Any = None
        self._spinner: Any = None

    # -- called from dbt's threads -----------------------------------------------
    def callback(self, msg: Any) -> None:
        try:
            name = msg.info.name
            if name == _NODE_START or name == _NODE_FINISHED or name in _TOTAL_EVENTS:
                self._queue.put(msg)
        except Exception:
            pass

    def line(self, text: str) -> None:
        """Print a line above the display (or as a plain line)."""
        self._queue.put(text)

    def flow_started(self, flow_run_name: str) -> None:
        with self._lock:
            self.flow_run_name = flow_run_name
        self.line(f"Running dbt {self.command} of project {self.project} in Prefect flow run '{flow_run_name}'")

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> ProgressDisplay:

        self._started = time.monotonic()
        if self.live:
            self.console = Console(file=sys.stdout, highlight=False)
            self._spinner = Spinner("dots", style="cyan")
            self._live = Live(
                get_renderable=self._render,
                console=self.console,
                refresh_per_second=10,
                transient=False,
                redirect_stdout=True,
                redirect_stderr=True,
            )
            self._live.start()
        else:
            self.console = Console(file=sys.stdout, highlight=False, color_system=None, soft_wrap=True)
        self._thread = threading.Thread(target=self._consume, name="dbt-prefect-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            self._finished = True
            self.running.clear()
        if self._live is not None:
            self._live.refresh()
            self._live.stop()

    # -- the consumer thread ---------------------------------------------------------
    def _consume(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                if isinstance(item, str):
                    self._print(item)
                else:
                    self._event(item)
            except Exception:
                pass  # the display must never disturb the run

    def _print(self, text: str, style: str | None = None) -> None:
        if self.live:
            self._live.console.print(Text(text, style=style or ""))
        else:
            print(text, flush=True)

    def _event(self, msg: Any) -> None:
        name = msg.info.name
        data = msg.data
        if name in _TOTAL_EVENTS:
            total = int(getattr(data, "total", 0) or 0)
            if total > 0:
                with self._lock:
                    self.total = total
            return
        node_info = data.node_info
        if node_info.materialized == "ephemeral":
            return  # ephemeral models are compiled into their children, never run
        label = self.translator.task_run_name(node_from_node_info(node_info))
        if name == _NODE_START:
            with self._lock:
                self.running[node_info.unique_id] = label
            return
        result = data.run_result
        info = classify(result.status)
        with self._lock:
            self.running.pop(node_info.unique_id, None)
            self.done += 1
            self.counts[info.bucket] += 1
            done, total = self.done, self.total or 0
        if self.live and info.bucket not in ("ERROR", "WARN"):
            return
        width = len(str(total)) if total else 1
        position = f"{done:>{width}}/{total if total else '?'}"
        timing = "" if info.skipped else f" [{result.execution_time:.2f}s]"
        self._print(f"{position} {info.label:<5} {label}{timing}", _STYLES.get(info.bucket))

    # -- live rendering (rich's refresh thread) --------------------------------------
    def _render(self) -> Any:

        with self._lock:
            total, done, finished = self.total, self.done, self._finished
            counts = dict(self.counts)
            running = list(self.running.values())
            flow_run_name = self.flow_run_name
        elapsed = int(time.monotonic() - self._started)
        title = Text()
        if finished:
            title.append("✓ " if self.succeeded else "✗ ", style="green" if self.succeeded else "red")
        title.append(f"dbt {self.command}", style="bold")
        title.append(f" · {self.project}")
        title.append(f" · flow run '{flow_run_name}'" if flow_run_name else " · starting Prefect flow run")
        header = Table.grid(padding=(0, 1))
        if finished:
            header.add_row(title)
        else:
            header.add_row(self._spinner, title)
        bar = Table.grid(padding=(0, 2))
        shown_total = max(total or 0, done) or None
        bar.add_row(
            ProgressBar(
                total=float(shown_total) if shown_total else None,
                completed=done,
                width=40,
                pulse=shown_total is None and not finished,
            ),
            Text(f"{done}/{shown_total if shown_total else '?'} nodes"),
            Text(f"{elapsed // 60}:{elapsed % 60:02d}", style="cyan"),
        )
        tally = Text()
        shown = [bucket for bucket in SUMMARY_BUCKETS if bucket != "NO-OP" or counts[bucket]]
        for i, bucket in enumerate(shown):
            if i:
                tally.append(" · ")
            tally.append(f"{bucket.lower()} {counts[bucket]}", style=_STYLES[bucket] if counts[bucket] else "")
        parts: list[Any] = [header, bar, tally]
        if not finished:
            if running:
                more = len(running) - _MAX_RUNNING_SHOWN
                text = "running: " + ", ".join(running[:_MAX_RUNNING_SHOWN]) + (f" (+{more} more)" if more > 0 else "")
            else:
                text = "running: dbt is parsing the project" if done == 0 else "running: -"
            parts.append(Text(text, no_wrap=True, overflow="ellipsis", style="bright_black"))
        return Group(*parts)
