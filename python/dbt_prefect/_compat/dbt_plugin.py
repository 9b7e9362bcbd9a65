"""Hands the manifest dbt has just parsed to the invoke() that asked for it.

dbt's plugin hook ``get_manifest_artifacts`` receives the live Manifest object right
after parsing, in the thread that called ``dbtRunner.invoke``. Capturing it there costs
nothing: no second parse and no reading of manifest.json. dbt marks the plugin interface
experimental; checked against dbt-core 1.10 and 1.11. When the hook does not fire
(``--no-write-json``, or a manifest passed in), the runner falls back to what it has.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dbt.plugins.manager import dbt_hook, dbtPlugin


class ManifestSlot:
    """Where one invoke() receives the manifest dbt parsed for it."""

    __slots__ = ("manifest",)

    def __init__(self) -> None:
        self.manifest: Any = None


_current = threading.local()


@contextmanager
def capture_manifest() -> Iterator[ManifestSlot]:
    slot = ManifestSlot()
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
        return {}
