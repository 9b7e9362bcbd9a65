"""The outbox: every event and API log line of a dbt run, delivered in order, in batches,
again and again until the Prefect API takes them or the run gives up on it.

Prefect's own event and log workers send one event at a time over a websocket and one
log batch per interval, drop what fails, and at exit wait without bound for what they
still hold. For a run of hundreds of nodes, that meant a server restart lost task-run
states (leaving task runs Running forever) and a server that went away hung the process.

The outbox keeps what it could not send and tries again with a capped backoff, so a
server that comes back during the run receives everything. When the run ends it waits
for delivery, at most ``timeout`` seconds, and gives up sooner (``unreachable_grace``)
when the API is not answering, then says once what it could not deliver.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from dbt_prefect.delivery.api import ApiRejected, ApiUnavailable, PrefectApi

_logger = logging.getLogger("dbt_prefect")

# How long lines and events gather before a request, while the run goes on: the UI
# stays live, and the server gets one request per batch instead of one per event. Every
# request costs dbt's process about 1.5 ms of the GIL (httpx); a longer interval leaves the
# server more task-run states to record after the last batch, which invoke waits for.
BATCH_INTERVAL = 0.2
MAX_EVENTS_PER_REQUEST = 500
MAX_BYTES_PER_REQUEST = 2_000_000
MAX_BACKOFF = 2.0
# An open-source server takes an event (HTTP 204) before it processes it: a task-run
# recorder in memory, and a persister that writes every 5 s by default. A server killed
# then loses what it took in the last seconds. So when the API stops answering, the
# events it took in this window are sent again once it is back; the server deduplicates
# events by id. Log lines are written before the server answers, so they are not resent.
REDELIVERY_WINDOW = 10.0
# A Prefect event's related resources are capped by the server (maximum_related_resources).
_DEFAULT_MAX_RELATED = 100


@dataclass(frozen=True)
class DeliveryReport:
    """What did not reach the API: by kind, and why."""

    task_run_states: int = 0
    asset_events: int = 0
    other_events: int = 0
    log_lines: int = 0
    rejected: int = 0
    error: str | None = None
    other_names: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not (self.task_run_states or self.asset_events or self.other_events or self.log_lines)

    def warning(self) -> str:
        parts = [
            f"{self.task_run_states} task-run state(s)",
            f"{self.log_lines} log line(s)",
            f"{self.asset_events} asset event(s)",
        ]
        if self.other_events:
            parts.append(f"{self.other_events} other event(s) ({', '.join(self.other_names)})")
        cause = f" ({self.error})" if self.error else ""
        return (
            f"dbt-prefect could not deliver {', '.join(parts)} to the Prefect API{cause}; "
            "dbt's own result is unaffected"
        )


class _Item:
    __slots__ = ("body", "document", "kind", "name")

    def __init__(self, body: bytes | None, kind: str, name: str = "", document: dict[str, Any] | None = None) -> None:
        self.body = body  # for events: None until the sender thread serialises ``document``
        self.document = document
        self.kind = kind  # "state", "asset", "event" or "log"
        self.name = name


class Outbox:
    """One run's events and API logs, sent by one background thread."""

    def __init__(
        self,
        api: PrefectApi,
        related: list[dict[str, Any]] | Callable[[], list[dict[str, Any]]] | None = None,
        max_related: int = _DEFAULT_MAX_RELATED,
    ) -> None:
        self.api = api
        # The run context's related resources take the API a round trip or three to read:
        # given as a callable, the sender thread reads them while dbt starts.
        self._related_source = related if callable(related) else None
        self.related: list[dict[str, Any]] = [] if callable(related) else (related or [])
        self.max_related = max_related
        self._events: deque[_Item] = deque()
        self._logs: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._abandoned = False
        self._thread: threading.Thread | None = None
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self.rejected = 0
        self.delivered_events = 0
        self.delivered_logs = 0
        self._in_flight_since: float | None = None
        # Events the API took lately, oldest first: (when, item), for REDELIVERY_WINDOW.
        self._recent: deque[tuple[float, _Item]] = deque()
        self.redelivered = 0

    # -- intake (any thread) -------------------------------------------------------------
    def add_event(self, event: Any) -> None:
        document = event.model_dump(mode="json")
        name = event.event
        if name.startswith("prefect.task-run."):
            kind = "state"
        elif name.startswith(("prefect.asset.", "dbt_prefect.asset.")):  # materializations, references, checks
            kind = "asset"
        else:
            kind = "event"
        self._put(self._events, _Item(None, kind, name, document))

    def add_log(self, log: dict[str, Any] | bytes) -> None:
        if isinstance(log, dict):
            body = orjson.dumps({k: v for k, v in log.items() if k != "__payload_size__"}, default=str)
        else:
            body = bytes(log)
        self._put(self._logs, _Item(body, "log"))

    def _put(self, queue: deque[_Item], item: _Item) -> None:
        with self._cond:
            queue.append(item)
            if len(queue) == 1:
                self._cond.notify()

    # -- the sender thread -------------------------------------------------------------
    def start(self) -> None:
        # In the caller's context: the related resources are those of the caller's run.
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._run,), name="dbt-prefect-outbox", daemon=True)
        self._thread.start()

    def _serialised(self, item: _Item) -> bytes:
        if item.body is None:  # an event: its document is kept until the first send
            document = item.document or {}
            resource = document.get("resource") or {}
            if self.related and "prefect.resource.lineage-group" not in resource:
                # What Prefect's events worker attaches from the run context, as it would.
                related = document.get("related") or []
                involved = {resource.get("prefect.resource.id"), *(r.get("prefect.resource.id") for r in related)}
                room = max(self.max_related - len(related), 0)
                extra = [r for r in self.related if r["prefect.resource.id"] not in involved][:room]
                document["related"] = [*related, *extra]
            item.body = orjson.dumps(document)
            item.document = None
        return item.body

    def _run(self) -> None:
        if self._related_source is not None:
            try:
                self.related = self._related_source()
            except Exception as exc:  # events still carry their own resources
                _logger.debug("could not read the run context's related resources: %s", exc)
        backoff = 0.0
        while True:
            with self._cond:
                while not (self._events or self._logs) and not self._closing:
                    self._cond.wait()
                if self._abandoned or (self._closing and not (self._events or self._logs)):
                    return
                # Gather a batch while the run goes on; at the end, send at once.
                pause = backoff or (0.0 if self._closing else BATCH_INTERVAL)
                until = time.monotonic() + pause
                # New items notify too: only closing cuts a batching pause short, and only
                # abandoning cuts a backoff short.
                while (
                    not (self._abandoned or (self._closing and not backoff)) and (left := until - time.monotonic()) > 0
                ):
                    self._cond.wait(left)
                if self._abandoned:
                    return
            if self._send_batch(self._events, "/events") and self._send_batch(self._logs, "/logs/"):
                backoff = 0.0
            else:
                backoff = min(max(backoff * 2, 0.25), MAX_BACKOFF)

    def _send_batch(self, queue: deque[_Item], path: str) -> bool:
        """Send the oldest items of one queue; True when they were taken (or rejected for good)."""
        with self._cond:
            candidates = list(itertools.islice(queue, MAX_EVENTS_PER_REQUEST))
        # Serialised outside the lock: the recorder keeps adding while this thread works.
        batch: list[_Item] = []
        bodies: list[bytes] = []
        size = 2
        for item in candidates:
            body = self._serialised(item)
            if batch and size + len(body) > MAX_BYTES_PER_REQUEST:
                break
            batch.append(item)
            bodies.append(body)
            size += len(body) + 1
        if not batch:
            return True
        self._in_flight_since = time.monotonic()
        try:
            self.api.post(path, b"[" + b",".join(bodies) + b"]")
        except ApiUnavailable as exc:
            self.last_error = str(exc)
            if self.failing_since is None:
                self.failing_since = time.monotonic()
                self._requeue_recent()
            return False
        except ApiRejected as exc:
            # Sending it again would be refused again: drop it, and say so at the end.
            self.rejected += len(batch)
            self.last_error = str(exc)
            _logger.debug("the Prefect API rejected %d item(s) from dbt-prefect: %s", len(batch), exc)
        finally:
            self._in_flight_since = None
        self.failing_since = None
        now = time.monotonic()
        with self._cond:
            for item in batch:
                # close() may have given up and emptied the queue meanwhile.
                if queue and queue[0] is item:
                    queue.popleft()
        if path == "/events":
            self._recent.extend((now, item) for item in batch)
            while self._recent and now - self._recent[0][0] > REDELIVERY_WINDOW:
                self._recent.popleft()
            self.delivered_events += len(batch)
        else:
            self.delivered_logs += len(batch)
        return True

    def _requeue_recent(self) -> None:
        """The API stopped answering: send the events it took lately again, ahead of the rest."""
        now = time.monotonic()
        recent = [item for when, item in self._recent if now - when <= REDELIVERY_WINDOW]
        self._recent.clear()
        if recent:
            with self._cond:
                self._events.extendleft(reversed(recent))
            self.redelivered += len(recent)

    # -- the end of the run ----------------------------------------------------------------
    def close(self, timeout: float, unreachable_grace: float = 5.0) -> DeliveryReport:
        """Deliver what is left, waiting at most ``timeout`` seconds, and at most
        ``unreachable_grace`` seconds once the API stops answering; report what is left."""
        start = time.monotonic()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        thread = self._thread
        while thread is not None and thread.is_alive():
            thread.join(0.05)
            now = time.monotonic()
            if now - start >= timeout:
                break
            failing = self.failing_since is not None
            stuck = self._in_flight_since is not None and now - self._in_flight_since >= unreachable_grace
            if (failing or stuck) and now - start >= unreachable_grace:
                break
        with self._cond:
            self._abandoned = True
            self._cond.notify_all()
            left = [*self._events, *self._logs]
            self._events.clear()
            self._logs.clear()
        if thread is None or not thread.is_alive():
            self.api.close()
        counts = {kind: sum(1 for item in left if item.kind == kind) for kind in ("state", "asset", "event", "log")}
        return DeliveryReport(
            task_run_states=counts["state"],
            asset_events=counts["asset"],
            other_events=counts["event"],
            log_lines=counts["log"],
            rejected=self.rejected,
            error=self.last_error if left or self.rejected else None,
            other_names=tuple(sorted({item.name for item in left if item.kind == "event"})),
        )
