"""dbt's event stream, reduced to what dbt-prefect needs.

``DbtEventRouter`` is the callback handed to ``dbtRunner``. dbt calls it for every event
(dozens per node, debug ones included, from dbt's worker threads), so it does one thing:
keep the few events that matter and queue them for the recorder thread. Everything
costly happens there, off dbt's threads.

The dbt package talks to the runner through debug log lines that start with
``dbt_prefect.record.`` (``{{ log(...) }}`` in its macros). They are forwarded whatever the
log level. One of them is a question: ``record_run_history`` asks for the run's task-run
ids, and the router answers it synchronously, before dbt's ``log()`` returns.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from typing import Any

from dbt_prefect._compat.dbt import set_invocation_env_var
from dbt_prefect.model.levels import DBT_TO_PYTHON
from dbt_prefect.model.metadata import WarehouseMetadata, parse_metadata_record
from dbt_prefect.model.package_contract import METADATA_RECORD, RECORD_PREFIX, RUN_CONTEXT_ENV, RUN_CONTEXT_REQUEST

_logger = logging.getLogger("dbt_prefect")

NODE_START = "NodeStart"
NODE_FINISHED = "NodeFinished"
STATE_EVENTS = frozenset({NODE_START, NODE_FINISHED})

# What `{{ log(msg) }}` / `{{ log(msg, info=True) }}` fire.
JINJA_LOG_EVENTS = frozenset({"JinjaLogDebug", "JinjaLogInfo"})
# How long dbt waits for the recorder to answer before it goes on without the answer.
ANSWER_TIMEOUT_SECONDS = 30.0

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class DbtEventRouter:
    """The dbtRunner callback: forwards node state events and loggable events, drops the rest."""

    __slots__ = ("_forward", "_threshold")

    def __init__(self, forward: Callable[[Any], None], threshold: int) -> None:
        self._forward = forward
        self._threshold = threshold

    def __call__(self, msg: Any) -> None:
        info = msg.info
        name = info.name
        if name in STATE_EVENTS:
            self._forward(msg)
        elif name in JINJA_LOG_EVENTS and info.msg.startswith(RECORD_PREFIX):
            if info.msg.startswith(RUN_CONTEXT_REQUEST):
                self._answer(msg)
            else:
                self._forward(msg)
        elif DBT_TO_PYTHON.get(info.level, 20) >= self._threshold:
            self._forward(msg)

    def _answer(self, msg: Any) -> None:
        # Runs in dbt's thread, inside the macro's log() call: the recorder answers once it
        # has handled every event queued before this one, so every task run exists.
        question = RecorderQuestion(msg)
        self._forward(question)
        if not question.answered.wait(ANSWER_TIMEOUT_SECONDS):
            return
        set_invocation_env_var(RUN_CONTEXT_ENV, question.answer)


class RecorderQuestion:
    """A dbt-package question, queued for the recorder thread and waited on by dbt's thread."""

    __slots__ = ("msg", "answer", "answered")

    def __init__(self, msg: Any) -> None:
        self.msg = msg
        self.answer = ""
        self.answered = threading.Event()

    def reply(self, answer: Any) -> None:
        """Answer as JSON and release dbt's thread, whatever happens."""
        try:
            self.answer = json.dumps(answer)
        except Exception:  # the run history goes on without Prefect ids
            _logger.exception("dbt-prefect could not answer the dbt package's run context request")
        finally:
            self.answered.set()


# Whether an event type carries node_info, per event name: asked once per name.
_HAS_NODE_INFO: dict[str, bool] = {}


def event_unique_id(msg: Any) -> str | None:
    """The unique_id of the node an event belongs to, or None for run-level events."""
    name = msg.info.name
    has_node_info = _HAS_NODE_INFO.get(name)
    if has_node_info is None:
        has_node_info = "node_info" in msg.data.DESCRIPTOR.fields_by_name
        _HAS_NODE_INFO[name] = has_node_info
    if not has_node_info:
        return None
    return msg.data.node_info.unique_id or None


def event_timestamp(msg: Any) -> float:
    """When dbt emitted the event, as a POSIX timestamp."""
    ts = msg.info.ts
    return ts.seconds + ts.nanos / 1e9


def event_level(msg: Any) -> int:
    return DBT_TO_PYTHON.get(msg.info.level, 20)


def event_text(msg: Any) -> str:
    text = msg.info.msg
    if "\x1b" in text:
        text = _ANSI_ESCAPE.sub("", text)
    return text


def log_event(logger: logging.Logger, extra: dict[str, Any], msg: Any, level: int, scrub: Callable[[str], str]) -> None:
    """Hand one dbt line to a Prefect logger, with the moment dbt emitted it, secrets masked."""
    record = logger.makeRecord(logger.name, level, "dbt", 0, scrub(event_text(msg)), (), None, extra=extra)
    created = event_timestamp(msg)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    logger.handle(record)


def package_record(text: str) -> WarehouseMetadata | None:
    """The metadata in a ``dbt_prefect.record.`` line of the dbt package; None for a record
    kind this version does not read. Raises MalformedRecord for a metadata line it cannot read."""
    if not text.startswith(METADATA_RECORD):
        return None
    return parse_metadata_record(text[len(METADATA_RECORD) :])
