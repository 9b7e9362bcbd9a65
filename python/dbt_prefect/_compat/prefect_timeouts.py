"""Prefect's timeouts outside the main thread, redirected so that dbt can cancel its queries.

Checked against prefect 3.9.1 (``prefect._internal.concurrency.cancellation``) and CPython
3.11-3.13.

Why: Prefect enforces a sync task's or flow's ``timeout_seconds`` in a thread other than
the main thread (a task submitted to a thread pool, or a task timeout inside a flow that
has one) with ``WatcherThreadCancelScope``: a watcher thread calls the private
``_send_exception_to_thread(thread, CancelledError)``, which injects the exception with
``PyThreadState_SetAsyncExc``. Two things keep that from stopping dbt:

- dbt cancels its connections (``_cancel_connections`` in ``dbt/task/runnable.py``) only
  when a KeyboardInterrupt or SystemExit reaches ``execute_nodes``. A CancelledError
  leaves the node threads and their warehouse queries running.
- An injected exception is raised only when the thread next runs Python code, and dbt's
  main thread is blocked in a ``threading.Condition.wait`` until a node finishes, which
  may be an hour away.

``redirect_injected_exceptions`` wraps that private function for the threads registered
here: it tells the caller what Prefect meant to raise, injects KeyboardInterrupt instead,
and wakes the thread from the Condition wait it is blocked in (a spurious wake-up, which
every Condition user must tolerate). Threads not registered get Prefect's behaviour. If a
Prefect release renames the function, nothing is wrapped and the timeout behaves as
Prefect's own.

``_current_frames`` (``sys._current_frames``) finds the Condition a thread waits on.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# thread ident -> called with the exception type Prefect meant to inject; returns the
# type to inject instead, or None to inject nothing.
_REDIRECTS: dict[int, Callable[[type[BaseException]], type[BaseException] | None]] = {}
_LOCK = threading.Lock()
_CONDITION_WAIT = threading.Condition.wait.__code__
_installed = False


def _module() -> Any:
    try:
        from prefect._internal.concurrency import cancellation
    except ImportError:  # pragma: no cover - a Prefect that moved it: Prefect's behaviour
        return None
    return cancellation if callable(getattr(cancellation, "_send_exception_to_thread", None)) else None


def _install() -> None:
    global _installed
    with _LOCK:
        module = _module()
        if _installed or module is None:
            return
        original = module._send_exception_to_thread

        def send_exception_to_thread(thread: threading.Thread, exc_type: type[BaseException]) -> None:
            with _LOCK:
                redirect = _REDIRECTS.get(thread.ident or -1)
                if redirect is None:
                    return original(thread, exc_type)
                replacement = redirect(exc_type)
                if replacement is not None:
                    original(thread, replacement)
                    _wake(thread.ident or -1)

        module._send_exception_to_thread = send_exception_to_thread
        _installed = True


@contextmanager
def redirect_injected_exceptions(
    redirect: Callable[[type[BaseException]], type[BaseException] | None],
) -> Iterator[None]:
    """While active, an exception Prefect injects into this thread goes through `redirect`.

    On leaving, an exception injected but not yet raised is withdrawn, so it never lands
    in the caller's code after the block.
    """
    _install()
    ident = threading.get_ident()
    with _LOCK:
        _REDIRECTS[ident] = redirect
    try:
        yield
    finally:
        with _LOCK:
            _REDIRECTS.pop(ident, None)
            # PyThreadState_SetAsyncExc with NULL clears a pending injected exception.
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)


def _wake(ident: int) -> None:
    """Wake thread `ident` from the threading.Condition wait it is blocked in, if any."""
    frame = sys._current_frames().get(ident)
    while frame is not None and frame.f_code is not _CONDITION_WAIT:
        frame = frame.f_back
    if frame is None:
        return
    condition = frame.f_locals.get("self")
    if isinstance(condition, threading.Condition) and condition.acquire(timeout=1):
        try:
            condition.notify_all()
        finally:
            condition.release()
