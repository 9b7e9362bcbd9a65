"""Timeouts, cancellation and SIGTERM stop dbt through dbt's own cancel path.

dbt stops cleanly only when a KeyboardInterrupt (or SystemExit) reaches its
``execute_nodes``: it then cancels every open connection, which cancels the warehouse
queries in flight, waits for its node threads and reports the run as interrupted. Any
other exception leaves dbt's threads and their queries running after ``invoke`` has
gone (what prefect-dbt does after a task timeout, prefect-dbt issue #23161).

What Prefect (3.9) raises in the thread that runs ``invoke``:

- a task's or a flow's ``timeout_seconds``, in the main thread: a SIGALRM handler
  (``AlarmCancelScope``) raises Prefect's ``CancelledError``; the scope turns it into
  ``TaskRunTimeoutError`` / ``FlowRunTimeoutError`` when it exits;
- the same timeout in another thread (a submitted task, or a task timeout inside a flow
  timeout): a watcher thread injects ``CancelledError`` (see ``_compat/prefect_timeouts``);
- SIGTERM (a worker cancelling the flow run, ``kill``, a container stopping): the flow
  engine's handler raises ``TerminationSignal`` in the main thread; with no handler (no
  flow), SIGTERM ends the process at once.

``dbt_cancels_on_interrupt`` wraps the ``invoke`` call. While dbt runs, the first of
those becomes a KeyboardInterrupt for dbt, and what Prefect meant to raise is kept. When
dbt has cancelled its queries and returned, that exception is raised, so Prefect records
its own timeout, cancellation or crash, and the runner closes the task runs still open as
``Crashed``. A SIGTERM with no handler is raised as ``TerminationSignal``. A request that
comes while dbt cancels is not sent to dbt again; a SIGTERM then still wins over a timeout.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from prefect.exceptions import TerminationSignal

from dbt_prefect._compat.prefect_timeouts import redirect_injected_exceptions

# SIGALRM: Prefect's timeouts in the main thread; SIGTERM: termination and cancellation.
# (Windows has no SIGALRM, and Prefect no sync timeouts there.)
_SIGNALS: tuple[int, ...] = tuple(getattr(signal, name) for name in ("SIGALRM", "SIGTERM") if hasattr(signal, name))


class _Interrupt:
    """The first cancellation request of one dbt invocation, and what it meant to raise."""

    def __init__(self) -> None:
        self.pending: BaseException | None = None
        self.closed = False  # dbt has returned: signals go straight to their own handlers
        self._lock = threading.Lock()

    def claim(self, meant: BaseException) -> bool:
        """Keep `meant`; True for the first request only (dbt gets one KeyboardInterrupt).
        A termination that comes later replaces a pending timeout: the process must still end."""
        with self._lock:
            if self.pending is None:
                self.pending = meant
                return True
            if isinstance(meant, TerminationSignal) and not isinstance(self.pending, TerminationSignal):
                self.pending = meant
            return False

    def handler(self, signum: int, previous: Any) -> Callable[[int, FrameType | None], None]:
        def on_signal(number: int, frame: FrameType | None) -> None:
            try:
                if callable(previous):
                    previous(number, frame)
                elif previous == signal.SIG_DFL and signum == signal.SIGTERM:
                    raise TerminationSignal(signal=signum)
            except BaseException as meant:
                if self.closed:
                    raise
                if self.claim(meant):
                    raise KeyboardInterrupt(_reason(meant)) from None

        return on_signal

    def redirect(self, exc_type: type[BaseException]) -> type[BaseException] | None:
        return KeyboardInterrupt if self.claim(exc_type()) else None


def _reason(meant: BaseException) -> str:
    why = "SIGTERM (termination or cancellation)" if isinstance(meant, TerminationSignal) else "a Prefect timeout"
    return f"dbt-prefect: {why}; dbt cancels its queries"


@contextmanager
def dbt_cancels_on_interrupt() -> Iterator[None]:
    """Run dbt in this block: a timeout, cancellation or SIGTERM cancels it the way Ctrl-C does."""
    interrupt = _Interrupt()
    installed: dict[int, Any] = {}
    with redirect_injected_exceptions(interrupt.redirect):
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                previous = signal.getsignal(signum)
                # An alarm nobody handles is not a timeout; SIGTERM's default ends the process.
                if callable(previous) or (previous == signal.SIG_DFL and signum == getattr(signal, "SIGTERM", None)):
                    installed[signum] = previous
                    signal.signal(signum, interrupt.handler(signum, previous))
        try:
            yield
        except KeyboardInterrupt:
            if interrupt.pending is None:
                raise
        finally:
            interrupt.closed = True
            for signum, previous in installed.items():
                signal.signal(signum, previous)
    if interrupt.pending is not None:
        raise interrupt.pending
