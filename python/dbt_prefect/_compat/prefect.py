"""The only place dbt-prefect touches Prefect internals. Checked against prefect 3.8.8 and 3.9.1.

Why each is needed:
- Prefect 3 records task runs on the server from the state-change events its client
  emits (this is how the task engine itself works since 3.x). Emitting those events for
  each dbt node, instead of running a task engine per node, is what makes mirroring dbt
  nearly free. ``emit_task_run_state_change_event`` builds the exact event the engine sends.
- Flushing: ``invoke`` promises that every task run, log and asset event is on the server
  when it returns, so it waits for Prefect's background event and log workers to drain.
- Asset key rules: Prefect validates keys with these constants; keys are cleaned with the
  same ones rather than a copy that could drift.
- Between 3.8 and 3.9 none of these changed. (3.9's log worker queues each record as
  JSON bytes instead of a dict; ``drain_all`` and ``wait_until_empty`` behave the same.)
- Timestamps: TaskRun and State annotate their times with Prefect's own datetime subtype;
  ``utc_datetime`` gives a plain aware datetime that type, as Prefect's validators accept.
- Routing to the outbox (delivery/outbox.py): the events Prefect builds for us
  (``emit_event``, ``emit_task_run_state_change_event``) and the log records its API log
  handler prepares end in ``EventsWorker.send`` and ``APILogWorker.send``. While a run's
  outbox is active in the current context, those two hand our items to the outbox
  instead: Prefect builds them exactly as for its own tasks, and the outbox delivers them
  with retries and a bounded end. Anything sent outside such a context goes to Prefect's
  workers as before. ``related_resources`` is what the events worker attaches to each
  event from the run context.
- Exit without the API: Prefect's event and log workers wait at interpreter exit, without
  bound, until they have sent what they hold (QueueService registers that wait with
  ``threading._register_atexit``). Once a run found the API gone, ``release_at_exit``
  registers a hook that runs before theirs: if the API still does not answer, it drops
  what they hold (the flow engine's own events and lines) and marks them done, so the
  process exits.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, cast

from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.types.names import MAX_ASSET_KEY_LENGTH, RESTRICTED_ASSET_CHARACTERS
from prefect.utilities.engine import emit_task_run_state_change_event

if TYPE_CHECKING:
    from prefect.types._datetime import DateTime

__all__ = [
    "MAX_ASSET_KEY_LENGTH",
    "related_resources",
    "routed_to",
    "RESTRICTED_ASSET_CHARACTERS",
    "emit_task_run_state_change_event",
    "flush_events_and_logs",
    "prefect_datetime",
    "utc_datetime",
]

_logger = logging.getLogger("dbt_prefect")


def utc_datetime(timestamp: float) -> DateTime:
    """A POSIX timestamp as the aware UTC datetime Prefect's run and state models hold."""
    return prefect_datetime(dt.datetime.fromtimestamp(timestamp, tz=dt.UTC))


def prefect_datetime(value: dt.datetime) -> DateTime:
    """An aware datetime, typed as Prefect's run models annotate their times."""
    return cast("DateTime", value)


def flush_events_and_logs(timeout: float) -> bool:
    """Wait, at most ``timeout`` seconds, until queued events and API logs reach the server."""

    def wait() -> None:
        try:
            # A plain queue: join() returns once every queued event has been sent.
            EventsWorker.instance().wait_until_empty()
        except Exception as exc:  # a flush problem must never hide dbt's own result
            _logger.debug("could not flush Prefect events: %s", exc)
        try:
            # The log worker batches and does not mark items done, so it is drained
            # (stopped and emptied) instead, as APILogHandler.flush() does; the next
            # log record starts a fresh worker.
            APILogWorker.drain_all(timeout=timeout, at_exit=False)
        except Exception as exc:
            _logger.debug("could not flush Prefect logs: %s", exc)

    # wait_until_empty() has no timeout; wait in a helper thread so a server that
    # stopped answering cannot hang invoke().
    waiter = threading.Thread(target=wait, name="dbt-prefect-flush", daemon=True)
    waiter.start()
    waiter.join(timeout)
    return not waiter.is_alive()


# The outbox of the run in progress in this context, if any.
_OUTBOX: ContextVar[Any] = ContextVar("dbt_prefect_outbox", default=None)
_ROUTING_LOCK = threading.Lock()
_routing_installed = False


def _install_routing() -> None:
    global _routing_installed
    with _ROUTING_LOCK:
        if _routing_installed:
            return
        send_event = EventsWorker.send
        send_log = APILogWorker.send

        def events_worker_send(self: Any, event: Any) -> None:
            outbox = _OUTBOX.get()
            if outbox is None:
                send_event(self, event)
            else:
                outbox.add_event(event)

        def api_log_worker_send(self: Any, log: Any) -> None:
            outbox = _OUTBOX.get()
            if outbox is None:
                send_log(self, log)
            else:
                outbox.add_log(log)

        EventsWorker.send = events_worker_send  # type: ignore[method-assign,assignment]
        APILogWorker.send = api_log_worker_send  # type: ignore[method-assign,assignment]
        _routing_installed = True


@contextmanager
def routed_to(outbox: Any) -> Iterator[None]:
    """Within this block (and threads started from a copy of its context), Prefect's
    events and API logs go to ``outbox``."""
    _install_routing()
    token = _OUTBOX.set(outbox)
    try:
        yield
    finally:
        _OUTBOX.reset(token)


def related_resources(timeout: float = 5.0) -> list[dict[str, str]]:
    """The related resources Prefect's events worker attaches from the current run
    context (flow run, task run, flow, deployment, work pool, tags), as JSON."""
    from prefect.client.orchestration import get_client
    from prefect.events.related import related_resources_from_run_context
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def read() -> list[Any]:
        import asyncio

        async with get_client() as client:
            return await asyncio.wait_for(related_resources_from_run_context(client), timeout)

    try:
        found: list[Any] = run_coro_as_sync(read()) or []
    except Exception as exc:  # the API is down: events still carry their own resources
        _logger.debug("could not read the run context's related resources: %s", exc)
        return []
    return [resource.model_dump(mode="json") for resource in found]


_release_installed = False


def release_at_exit(api_answers: Any) -> None:
    """At interpreter exit, if ``api_answers()`` is false, let Prefect's event and log
    workers stop without sending what they still hold; say how much that was."""
    global _release_installed
    with _ROUTING_LOCK:
        if _release_installed:
            return
        _release_installed = True

    def release() -> None:
        try:
            if api_answers():
                return
        except Exception:
            pass
        import queue as queue_module
        import sys

        from prefect._internal.concurrency.services import QueueService

        dropped = 0
        for service in list(getattr(QueueService, "_instances", {}).values()):
            if not isinstance(service, (EventsWorker, APILogWorker)):
                continue
            pending = getattr(service, "_queue", None)
            while pending is not None:
                try:
                    item = pending.get_nowait()
                except queue_module.Empty:
                    break
                pending.task_done()
                dropped += item is not None
            loop, done = getattr(service, "_loop", None), getattr(service, "_done_event", None)
            if loop is not None and done is not None and not loop.is_closed():
                loop.call_soon_threadsafe(done.set)
        if dropped:
            sys.stderr.write(
                f"dbt-prefect: the Prefect API is not answering; {dropped} event(s) and log batch item(s) "
                "of Prefect's own workers were dropped at exit\n"
            )

    threading._register_atexit(release)  # type: ignore[attr-defined]
