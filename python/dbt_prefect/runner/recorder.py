"""Where a dbt event becomes a Prefect task-run state, log record or asset event.

One recorder thread per invoke() consumes the events DbtEventRouter queued. Node task
runs are recorded the way Prefect's own task engine records them in Prefect 3: the
client emits task-run state-change events and the server builds the task runs from them.
No task engine, thread or latch per node, so nothing can be left waiting on a node dbt
never finishes; and every task run still open when dbt returns is closed explicitly.
How a task run and its state events are built is in task_runs.py.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from prefect.client.schemas.objects import TaskRun
from prefect.states import Crashed, Running, State

from dbt_prefect._compat.prefect import utc_datetime
from dbt_prefect.model.metadata import MalformedRecord, WarehouseMetadata
from dbt_prefect.model.nodes import DbtNode, FinishedNode, NodeCatalog
from dbt_prefect.model.package_contract import COLLECT_METADATA_ENV, COLLECT_METADATA_ON
from dbt_prefect.model.statuses import ERROR, SKIPPED, classify, prefect_state, skip_reason
from dbt_prefect.runner.events import (
    JINJA_LOG_EVENTS,
    NODE_FINISHED,
    NODE_START,
    RECORD_PREFIX,
    RecorderQuestion,
    event_level,
    event_timestamp,
    event_unique_id,
    log_event,
    package_record,
)
from dbt_prefect.runner.target import RunTarget, run_logger
from dbt_prefect.runner.task_runs import NodeRun, advance, new_task_run

_STOP = object()
_logger = logging.getLogger("dbt_prefect")

# A node's Running state is sent only once it has run this long. Most nodes finish
# sooner, and then one terminal event records the whole task run (its start time, run
# time and end time included): half the server writes per node. A node that runs longer
# shows as Running in the UI after this delay.
RUNNING_STATE_DELAY = 1.0


class RunRecorder:
    """Consumes one invocation's dbt events and mirrors them in Prefect."""

    def __init__(
        self,
        *,
        target: RunTarget | None,
        catalog: NodeCatalog,
        threshold: int,
        scrub: Callable[[str], str] = lambda text: text,
        on_node_finished: Callable[[FinishedNode, State | None], None] | None = None,
    ) -> None:
        self.target = target
        self.catalog = catalog
        self.threshold = threshold
        self._scrub = scrub
        self._on_node_finished = on_node_finished
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.forward = self._queue.put
        self._open: dict[str, NodeRun] = {}
        # Started nodes whose Running state is not sent yet, oldest first (see RUNNING_STATE_DELAY).
        self._not_yet_running: dict[str, NodeRun] = {}
        self._runs: dict[str, NodeRun] = {}
        self.finished: dict[str, FinishedNode] = {}
        self.task_run_ids: list[uuid.UUID] = []
        self._metadata: dict[str, WarehouseMetadata] = {}
        self._saved_env: tuple[str, str | None] | None = None
        self._thread: threading.Thread | None = None
        # Errors of the event handler, by "ExceptionType in EventName": counted, summarised at stop.
        self.handler_errors: dict[str, int] = {}
        self._run_logger, self._run_extra = run_logger(target)
        self._task_logger = logging.getLogger("prefect.task_runs")

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        if self.target is not None and self._on_node_finished is not None:
            self._saved_env = (COLLECT_METADATA_ENV, os.environ.get(COLLECT_METADATA_ENV))
            os.environ[COLLECT_METADATA_ENV] = COLLECT_METADATA_ON
        # The recorder runs in the caller's context so Prefect sees the flow run in it
        # (related resources on events, the API log handler).
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._consume,), name="dbt-prefect-recorder", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._log_error_summary()

    def _log_error_summary(self) -> None:
        """One warning for the handler errors so far, counted by kind; then they start over."""
        if self.handler_errors:
            total = sum(self.handler_errors.values())
            kinds = ", ".join(f"{n} x {kind}" for kind, n in sorted(self.handler_errors.items()))
            _logger.warning("dbt-prefect could not process %d dbt event(s) of this run: %s", total, kinds)
            self.handler_errors.clear()
        if self._saved_env is not None:
            name, previous = self._saved_env
            self._saved_env = None
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous

    def _consume(self) -> None:
        get = self._queue.get
        waiting = self._not_yet_running
        while True:
            msg: Any = None
            try:
                if waiting:
                    due = next(iter(waiting.values())).started + RUNNING_STATE_DELAY - time.time()
                    try:
                        msg = get(timeout=max(due, 0.0))
                    except queue.Empty:
                        self._send_due_running_states()
                        continue
                else:
                    msg = get()
                if msg is _STOP:
                    return
                if msg.__class__ is RecorderQuestion:
                    self._answer(msg)
                    continue
                self._handle(msg)
                if waiting:
                    self._send_due_running_states()
            except Exception as exc:  # never let one odd event stop the mirroring of the rest
                self._count_error(exc, msg)

    def _count_error(self, exc: Exception, msg: Any) -> None:
        name = getattr(getattr(msg, "info", None), "name", None) or (
            "closing a node after dbt returned" if msg is None else type(msg).__name__
        )
        kind = f"{type(exc).__name__} in {name}"
        if not self.handler_errors:
            _logger.exception("dbt-prefect could not process dbt event %s", name)
        self.handler_errors[kind] = self.handler_errors.get(kind, 0) + 1

    def _send_due_running_states(self) -> None:
        deadline = time.time() - RUNNING_STATE_DELAY
        waiting = self._not_yet_running
        while waiting:
            unique_id, run = next(iter(waiting.items()))
            if run.started > deadline:
                return
            del waiting[unique_id]
            self._set_state(run, Running(timestamp=utc_datetime(run.started)))

    # -- events ----------------------------------------------------------------------
    def _handle(self, msg: Any) -> None:
        name = msg.info.name
        if name in JINJA_LOG_EVENTS and msg.info.msg.startswith(RECORD_PREFIX):
            self._record(msg)
            return
        if name == NODE_START:
            self._node_started(msg)
        loggable = event_level(msg) >= self.threshold
        if loggable:
            self._log(msg)
        if name == NODE_FINISHED:
            self._node_finished(msg)

    def _node_for(self, node_info: Any) -> DbtNode:
        return self.catalog.from_node_info(node_info)

    def _node_started(self, msg: Any) -> None:
        node_info = msg.data.node_info
        node = self._node_for(node_info)
        if node.is_ephemeral or self.target is None:
            return
        timestamp = event_timestamp(msg)
        task_run = self._new_task_run(node, timestamp)
        run = NodeRun(node, task_run, self._task_log_extra(task_run, node), timestamp)
        self._open[node.unique_id] = run
        self._runs[node.unique_id] = run
        self.task_run_ids.append(task_run.id)
        # No Pending event: nothing is scheduled, dbt already started the node. Running is
        # sent if the node is still running after RUNNING_STATE_DELAY.
        self._not_yet_running[node.unique_id] = run

    def _node_finished(self, msg: Any) -> None:
        node_info = msg.data.node_info
        result = msg.data.run_result
        node = self._node_for(node_info)
        if node.is_ephemeral:
            return
        status = result.status
        message = self._scrub(result.message)
        run = self._open.pop(node.unique_id, None)
        state: State | None = None
        if classify(status).skipped:
            message = self._skip_reason(node) or message
        if run is not None:
            state = prefect_state(status, message, event_timestamp(msg))
            self._set_state(run, state)
        finished = FinishedNode(
            node=node,
            status=status,
            message=message,
            task_run_id=run.task_run.id if run is not None else None,
            node_info=node_info,
            run_result=result,
            metadata=self._metadata.pop(node.unique_id, None),
        )
        self.finished[node.unique_id] = finished
        if self._on_node_finished is not None:
            self._on_node_finished(finished, state)

    def record_not_run(self, node: DbtNode, status: str, message: str) -> FinishedNode:
        """A node the orchestrator decided not to hand to dbt (a failed parent in an earlier
        wave, a stale source): one task run, created in its terminal state.

        Call it while the recorder thread is stopped (between two dbt invocations)."""
        now = time.time()
        task_run_id = None
        state: State | None = None
        if self.target is not None:
            task_run = self._new_task_run(node, now)
            run = NodeRun(node, task_run, self._task_log_extra(task_run, node), now)
            self._runs[node.unique_id] = run
            self.task_run_ids.append(task_run.id)
            state = prefect_state(status, self._scrub(message), now)
            self._set_state(run, state)
            task_run_id = task_run.id
        finished = FinishedNode(
            node=node,
            status=status,
            message=self._scrub(message),
            task_run_id=task_run_id,
            node_info=None,
            run_result=None,
        )
        self.finished[node.unique_id] = finished
        if self._on_node_finished is not None:
            self._on_node_finished(finished, state)
        return finished

    # -- the dbt package's records -------------------------------------------------------
    def _record(self, msg: Any) -> None:
        """A line the dbt package logged for the runner; kept, never logged as such."""
        text = msg.info.msg
        try:
            metadata = package_record(text)
        except MalformedRecord as exc:
            self._warn(event_unique_id(msg), f"dbt-prefect ignored a malformed metadata record ({exc}): {text[:200]}")
            return
        if metadata is not None:
            self._metadata[metadata.unique_id] = metadata

    def _warn(self, unique_id: str | None, text: str) -> None:
        run = self._open.get(unique_id) if unique_id else None
        logger, extra = (self._task_logger, run.log_extra) if run is not None else (self._run_logger, self._run_extra)
        logger.warning(self._scrub(text), extra=extra)

    def _answer(self, question: RecorderQuestion) -> None:
        """What record_run_history asks at on-run-end: the flow run, and each node's task
        run and row count. Every event dbt sent before the question has been handled."""
        flow_run = self.target.flow_run if self.target is not None else None
        nodes = {}
        for unique_id, run in self._runs.items():
            done = self.finished.get(unique_id)
            metadata = done.metadata if done is not None else None
            row_count = metadata.row_count if metadata is not None else None
            nodes[unique_id] = {"task_run_id": str(run.task_run.id), "row_count": row_count}
        question.reply({"flow_run_id": str(flow_run.id) if flow_run is not None else None, "nodes": nodes})

    def _skip_reason(self, node: DbtNode) -> str:
        finished = self.finished
        return skip_reason(
            self.catalog.parents(node), lambda unique_id: getattr(finished.get(unique_id), "status", None)
        )

    # -- task runs -------------------------------------------------------------------
    def _new_task_run(self, node: DbtNode, timestamp: float) -> TaskRun:
        assert self.target is not None
        parent_ids = (self._open_or_finished_id(parent.unique_id) for parent in self.catalog.parents(node))
        return new_task_run(self.target, node, timestamp, parent_ids)

    def _open_or_finished_id(self, unique_id: str) -> uuid.UUID | None:
        run = self._open.get(unique_id)
        if run is not None:
            return run.task_run.id
        done = self.finished.get(unique_id)
        return done.task_run_id if done is not None else None

    def _set_state(self, run: NodeRun, state: State) -> None:
        advance(run, state, first_event=self._not_yet_running.pop(run.node.unique_id, None) is not None)

    def reconcile(self, dbt_statuses: dict[str, tuple[str, str]], dbt_raised: bool) -> None:
        """After dbt returns: every task run terminal, and in the state of dbt's final result.

        A node dbt started but never finished (skipped after NodeStart, interrupted run)
        is closed here; a node whose final result differs from what its events said (a
        callback that failed it after NodeFinished) is corrected.
        """
        now = time.time()
        for unique_id, run in list(self._open.items()):
            reported = dbt_statuses.get(unique_id)
            if reported is not None:
                status, message = reported[0], self._scrub(reported[1])
                state = prefect_state(status, message, now)
            elif dbt_raised:
                status, message = ERROR, "dbt stopped before this node finished"
                state = Crashed(message=message, timestamp=utc_datetime(now))
            else:
                status, message = SKIPPED, "dbt started this node but never finished it"
                state = prefect_state(status, message, now)
            self._set_state(run, state)
            del self._open[unique_id]
            # In the run report and the failure summary, with asset events that follow this state.
            closed = FinishedNode(
                node=run.node,
                status=status,
                message=message,
                task_run_id=run.task_run.id,
                node_info=None,
                run_result=None,
                metadata=self._metadata.pop(unique_id, None),
            )
            self.finished[unique_id] = closed
            if self._on_node_finished is not None:
                try:
                    self._on_node_finished(closed, state)
                except Exception as exc:  # dbt's outcome stands; the error is counted and summarised
                    self._count_error(exc, None)
        self._log_error_summary()
        for unique_id, (status, message) in dbt_statuses.items():
            done = self.finished.get(unique_id)
            finished_run = self._runs.get(unique_id)
            if done is None or finished_run is None:
                continue
            # A changed status, or dbt's message where the event had none (a stale source's
            # freshness result names its age only in the final result).
            if done.status == status and (done.message or not message):
                continue
            done.status = status
            done.message = self._scrub(message)
            self._set_state(finished_run, prefect_state(status, done.message, now))

    # -- logs ------------------------------------------------------------------------
    def _task_log_extra(self, task_run: TaskRun, node: DbtNode) -> dict[str, Any]:
        return {
            **self._run_extra,
            "task_run_id": str(task_run.id),
            "task_run_name": task_run.name,
            "task_name": node.task_run_name,
        }

    def _log(self, msg: Any) -> None:
        unique_id = event_unique_id(msg)
        run = self._open.get(unique_id) if unique_id else None
        if run is not None:
            logger, extra = self._task_logger, run.log_extra
        else:
            logger, extra = self._run_logger, self._run_extra
        level = event_level(msg)
        if logger.isEnabledFor(level):
            log_event(logger, extra, msg, level, self._scrub)
