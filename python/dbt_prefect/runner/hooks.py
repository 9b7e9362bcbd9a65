"""Lifecycle hooks: Python callbacks at the start of a run, after each model, at its end.

``@runner.on_run_start``, ``@runner.post_model(select=...)`` and
``@runner.on_run_end(select=...)`` register functions that receive a ``DbtHookContext``,
on the runner and the orchestrator alike (the official prefect-dbt API). ``select=`` is
dbt's selector syntax, resolved by dbt's own selector code against the invocation's
manifest, once per invocation. Hooks never run on dbt's threads: post_model hooks run on
a hook thread of their own, in order, so a slow hook delays neither dbt nor the task runs.
A hook that raises is logged as one warning naming it; nothing else changes.
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from contextvars import copy_context
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

from prefect.utilities.asyncutils import run_coro_as_sync

from dbt_prefect._compat.dbt_plugin import select_unique_ids
from dbt_prefect._compat.prefect import flush_events_and_logs
from dbt_prefect.model.statuses import ERROR, SUCCESS, hook_status
from dbt_prefect.runner.target import current_run_logger

_logger = logging.getLogger("dbt_prefect")

# How long invoke() waits for the log lines of on_run_end hooks to reach Prefect.
_FLUSH_SECONDS = 10.0

HookEvent = Literal["run_start", "post_model", "run_end"]
HookFunction = Callable[["DbtHookContext"], Any]
F = TypeVar("F", bound=HookFunction)


@dataclass(frozen=True)
class DbtHookContext:
    """What a hook is told. Which fields are set depends on the event (see the lifecycle hooks guide)."""

    event: HookEvent
    command: str
    owner: Any  # the PrefectDbtRunner or PrefectDbtOrchestrator the hook is registered on
    args: tuple[str, ...] = ()
    node: Any = None  # post_model: dbt's manifest node
    status: str | None = None  # post_model: success, error or skipped; run_end: success or error
    result: dict[str, Any] | None = None
    run_results: dict[str, Any] | None = None  # run_end: per unique_id, status, message, execution_time
    error: Any = None
    node_ids: tuple[str, ...] = ()

    @property
    def node_id(self) -> str | None:
        return getattr(self.node, "unique_id", None)


@dataclass(frozen=True)
class _Hook:
    function: HookFunction
    select: str | None = None

    @property
    def name(self) -> str:
        return getattr(self.function, "__name__", repr(self.function))


@dataclass
class LifecycleHooks:
    """The hooks registered on one runner or orchestrator."""

    run_start: list[_Hook] = field(default_factory=list)
    post_model: list[_Hook] = field(default_factory=list)
    run_end: list[_Hook] = field(default_factory=list)

    def add(self, event: HookEvent, function: HookFunction, select: str | None) -> None:
        if not callable(function):
            raise TypeError(f"a dbt hook must be a function taking a DbtHookContext, not {function!r}")
        if select is not None and (not isinstance(select, str) or not select.strip()):
            raise TypeError(f"select= takes a dbt selector string such as 'tag:critical', not {select!r}")
        getattr(self, event).append(_Hook(function, select))

    def __bool__(self) -> bool:
        return bool(self.run_start or self.post_model or self.run_end)

    @property
    def selectors(self) -> tuple[str, ...]:
        """Every distinct select= of the hooks, to resolve once per invocation."""
        found = (hook.select for hooks in (self.post_model, self.run_end) for hook in hooks if hook.select)
        return tuple(dict.fromkeys(found))

    def fire(self, event: HookEvent, context: DbtHookContext, selected: Mapping[str, frozenset[str]]) -> None:
        """Run the event's hooks that match, in registration order; a failing hook is logged."""
        for hook in getattr(self, event):
            if hook.select is not None and not _matches(selected.get(hook.select, frozenset()), context):
                continue
            try:
                outcome = hook.function(context)
                if inspect.iscoroutine(outcome):  # an async hook
                    run_coro_as_sync(outcome)
            except Exception as exc:
                current_run_logger().warning(
                    "dbt hook %s raised during %s; the run goes on: %s: %s",
                    hook.name,
                    event,
                    type(exc).__name__,
                    exc,
                    exc_info=True,
                )


def _matches(selected: frozenset[str], context: DbtHookContext) -> bool:
    if context.node_id is not None:
        return context.node_id in selected
    if context.node_ids:
        return any(node_id in selected for node_id in context.node_ids)
    return bool(selected)


class HookRegistration:
    """The decorators, shared by PrefectDbtRunner and PrefectDbtOrchestrator."""

    hooks: LifecycleHooks

    @overload
    def on_run_start(self, fn: F) -> F: ...

    @overload
    def on_run_start(self) -> Callable[[F], F]: ...

    def on_run_start(self, fn: HookFunction | None = None) -> Any:
        """Before dbt runs any node. Takes no select=: it sees the whole run."""
        return self._register("run_start", fn, None)

    @overload
    def post_model(self, fn: F) -> F: ...

    @overload
    def post_model(self, *, select: str | None = ...) -> Callable[[F], F]: ...

    def post_model(self, fn: HookFunction | None = None, *, select: str | None = None) -> Any:
        """After each model finishes (success, error or skipped); select= picks the models."""
        return self._register("post_model", fn, select)

    @overload
    def on_run_end(self, fn: F) -> F: ...

    @overload
    def on_run_end(self, *, select: str | None = ...) -> Callable[[F], F]: ...

    def on_run_end(self, fn: HookFunction | None = None, *, select: str | None = None) -> Any:
        """After dbt returns; with select=, only when a selected node took part in the run."""
        return self._register("run_end", fn, select)

    def _register(self, event: HookEvent, fn: HookFunction | None, select: str | None) -> Any:
        def decorator(function: F) -> F:
            self.hooks.add(event, function, select)
            return function

        return decorator if fn is None else decorator(fn)


class PostModelWorker:
    """Runs post_model hooks on a thread of their own, in the order models finished."""

    def __init__(self, hooks: LifecycleHooks, selected: Callable[[], Mapping[str, frozenset[str]]]) -> None:
        self._hooks = hooks
        self._selected = selected
        self._queue: queue.SimpleQueue[DbtHookContext | None] = queue.SimpleQueue()
        # The caller's context (flow run, settings) goes with it, for the hooks and their logs.
        context = copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._work,), name="dbt-prefect-hooks", daemon=True)
        self._thread.start()

    def put(self, context: DbtHookContext) -> None:
        self._queue.put(context)

    def close(self, timeout: float | None = None) -> None:
        """Wait until every queued hook ran."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            context = self._queue.get()
            if context is None:
                return
            self._hooks.fire("post_model", context, self._selected())


def run_results_of(entries: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """dbt's per-node results, keyed by unique_id: status, message, execution_time."""
    results: dict[str, dict[str, Any]] = {}
    for entry in entries:
        node = getattr(entry, "node", None)
        unique_id = getattr(entry, "unique_id", None) or getattr(node, "unique_id", None)
        if unique_id is None:
            continue
        status = getattr(entry, "status", "")
        results[unique_id] = {
            "status": str(getattr(status, "value", status)),
            "message": getattr(entry, "message", None) or "",
            "execution_time": float(getattr(entry, "execution_time", 0.0) or 0.0),
        }
    return results


class InvocationHooks:
    """The hooks of one invocation: what the runner calls at start, per node and at the end."""

    def __init__(self, hooks: LifecycleHooks, owner: Any, command: str, args: tuple[str, ...]) -> None:
        self._hooks = hooks
        self._owner = owner
        self._command = command
        self._args = args
        self._worker: PostModelWorker | None = None
        self._manifest: Callable[[], Any] = lambda: None
        self._slot_selected: Mapping[str, frozenset[str]] = {}
        self._selected: dict[str, frozenset[str]] = {}

    @property
    def selectors(self) -> tuple[str, ...]:
        return self._hooks.selectors

    @property
    def has_post_model(self) -> bool:
        return bool(self._hooks.post_model)

    def start(self, slot_selected: Mapping[str, frozenset[str]], manifest: Callable[[], Any]) -> None:
        """Fire on_run_start; from now on, post_model hooks run on their own thread.

        ``slot_selected`` fills in as dbt resolves the selectors after parsing;
        ``manifest`` gives the invocation's manifest for a selector it did not resolve."""
        self._slot_selected = slot_selected
        self._manifest = manifest
        if self._hooks.run_start:
            self._hooks.fire("run_start", self._context("run_start"), {})
        if self._hooks.post_model:
            self._worker = PostModelWorker(self._hooks, self.selected)

    def selected(self) -> Mapping[str, frozenset[str]]:
        for selector in self.selectors:
            if selector in self._selected:
                continue
            if selector in self._slot_selected:
                self._selected[selector] = self._slot_selected[selector]
                continue
            manifest = self._manifest()
            if manifest is not None:
                # dbt did not hand the manifest to the plugin hook (--no-write-json, or a
                # manifest given to the runner): resolve with the same dbt code here.
                self._selected[selector] = select_unique_ids(manifest, selector)
        return self._selected

    def node_finished(
        self, node_entry: Any, status: str, message: str, event_data: Callable[[], dict[str, Any]]
    ) -> None:
        """Queue the post_model hooks of a model that finished."""
        if self._worker is None or node_entry is None or str(getattr(node_entry, "resource_type", "")) != "model":
            return
        status_word = hook_status(status)
        self._worker.put(
            self._context(
                "post_model",
                node=node_entry,
                status=status_word,
                result={"event_data": event_data(), "message": message},
                error=message if status_word == ERROR else None,
                node_ids=(node_entry.unique_id,),
            )
        )

    def models_done(self) -> None:
        """Wait until every queued post_model hook ran (dbt has reported every node)."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def finish(self, dbt_result: Any, node_results: Iterable[Any]) -> None:
        """Fire on_run_end with dbt's result, once the post_model hooks are done; then make
        sure what the hooks logged reaches Prefect before invoke returns."""
        self.models_done()
        if not self._hooks.run_end:
            return
        success = bool(getattr(dbt_result, "success", False))
        run_results = run_results_of(node_results)
        context = self._context(
            "run_end",
            status=SUCCESS if success else ERROR,
            result={"success": success},
            run_results=run_results,
            error=getattr(dbt_result, "exception", None),
            node_ids=tuple(run_results),
        )
        self._hooks.fire("run_end", context, self.selected())
        flush_events_and_logs(_FLUSH_SECONDS)

    def _context(self, event: HookEvent, **fields: Any) -> DbtHookContext:
        return DbtHookContext(event=event, command=self._command, owner=self._owner, args=self._args, **fields)
