"""Hands the manifest dbt has just parsed to the invoke() that asked for it.

dbt's plugin hook ``get_manifest_artifacts`` receives the live Manifest object right
after parsing, in the thread that called ``dbtRunner.invoke``. Capturing it there costs
nothing: no second parse and no reading of manifest.json. dbt marks the plugin interface
experimental; checked against dbt-core 1.10 and 1.11. When the hook does not fire
(``--no-write-json``, or a manifest passed in), the runner falls back to what it has.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dbt.plugins.manager import dbt_hook, dbtPlugin

_logger = logging.getLogger("dbt_prefect")


class ManifestSlot:
    """Where one invoke() receives the manifest dbt parsed for it, and what its hooks'
    selectors select in it (resolved right there, in dbt's thread, before any node runs)."""

    __slots__ = ("manifest", "selectors", "selected", "on_parsed")

    def __init__(self, selectors: tuple[str, ...] = (), on_parsed: Callable[[], None] | None = None) -> None:
        self.manifest: Any = None
        self.selectors = selectors
        self.selected: dict[str, frozenset[str]] = {}
        self.on_parsed = on_parsed


_current = threading.local()


@contextmanager
def capture_manifest(
    selectors: tuple[str, ...] = (), on_parsed: Callable[[], None] | None = None
) -> Iterator[ManifestSlot]:
    slot = ManifestSlot(selectors, on_parsed)
    previous = getattr(_current, "slot", None)
    _current.slot = slot
    try:
        yield slot
    finally:
        _current.slot = previous


class ManifestCapturePlugin(dbtPlugin):
    def initialize(self) -> None:
        pass

    @dbt_hook
    def get_manifest_artifacts(self, manifest: Any) -> dict:
        slot = getattr(_current, "slot", None)
        if slot is not None:
            slot.manifest = manifest
            for selector in slot.selectors:
                slot.selected[selector] = select_unique_ids(manifest, selector)
            if slot.on_parsed is not None:
                slot.on_parsed()
        return {}


def select_unique_ids(manifest: Any, selector: str) -> frozenset[str]:
    """The unique_ids a dbt selector selects in this manifest, by dbt's own selector code
    (the graph and NodeSelector that `dbt ls` uses; internals, checked against dbt-core
    1.10 and 1.11). Runs inside the invocation, where dbt's flags are set.

    ``path:`` selectors are relative to the project root, which dbt's tasks put in a
    context variable while they select (``task_contextvars(project_root=...)``); without
    it dbt reads them against the working directory. The root is the invocation's
    ``--project-dir`` here, as dbt resolves it."""
    try:
        from dbt.compilation import Linker
        from dbt.graph import Graph, NodeSelector, parse_difference
        from dbt_common.events.contextvars import task_contextvars

        linker = Linker()
        linker.link_graph(manifest)
        spec = parse_difference([selector], None)
        with task_contextvars(project_root=_project_root()):
            selected = NodeSelector(Graph(linker.graph), manifest).get_selected(spec, warn_on_no_nodes=False)
        return frozenset(selected)
    except Exception as exc:  # a hook with a selector dbt cannot read matches nothing
        _logger.warning(
            "dbt-prefect could not resolve the hook selector %r, so its hooks fire for nothing: %s", selector, exc
        )
        return frozenset()


def _project_root() -> str:
    """The project directory of the current dbt invocation, absolute, as dbt's RuntimeConfig has it."""
    from dbt.flags import get_flags

    project_dir = getattr(get_flags(), "PROJECT_DIR", None)
    return str(Path(project_dir or Path.cwd()).resolve())
