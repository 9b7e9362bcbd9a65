"""dbt's event stream, reduced to what dbt-prefect needs.

``DbtEventRouter`` is the callback handed to ``dbtRunner``. dbt calls it for every event
(dozens per node, debug ones included, from dbt's worker threads), so it does one thing:
keep the few events that matter and queue them for the recorder thread. Everything
costly happens there, off dbt's threads.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

from dbt_prefect.levels import DBT_TO_PYTHON

NODE_START = "NodeStart"
NODE_FINISHED = "NodeFinished"
STATE_EVENTS = frozenset({NODE_START, NODE_FINISHED})

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class DbtEventRouter:
    """The dbtRunner callback: forwards node state events and loggable events, drops the rest."""

    __slots__ = ("_forward", "_threshold")

    def __init__(self, forward: Callable[[Any], None], threshold: int) -> None:
        self._forward = forward
        self._threshold = threshold

    def __call__(self, msg: Any) -> None:
        info = msg.info
        if info.name in STATE_EVENTS or DBT_TO_PYTHON.get(info.level, 20) >= self._threshold:
            self._forward(msg)


# Whether an event type carries node_info, per event name: asked once per name.
_HAS_NODE_INFO: dict[str, bool] = {}


def event_unique_id(msg: Any) -> Optional[str]:
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
