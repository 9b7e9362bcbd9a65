"""Where the orchestrator's cache keeps its keys: one JSON document per dbt project.

The document maps each node built by an earlier build to the key it was built with, the
hashes of the key's parts, and when it was built and expires. It lives in
``CacheConfig.key_storage``, else ``result_storage`` (the official fallback), else
Prefect's default result storage: a local directory, a block slug ("s3-bucket/name"),
or a WritableFileSystem block, so that workers on other machines share it.

A store that cannot be read or holds something else is never trusted: the build warns
and runs every node, then writes a fresh document.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_logger = logging.getLogger("dbt_prefect")

FORMAT = "dbt-prefect-cache/1"


@dataclass(frozen=True)
class CacheEntry:
    key: str
    parts: Mapping[str, str | None]
    built_at: float
    expires_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "parts": dict(self.parts), "built_at": self.built_at, "expires_at": self.expires_at}


class CacheStoreUnreadable(Exception):
    """The cache document exists but cannot be used; the message says why."""


class CacheStore:
    """The cache document of one project in one storage location."""

    def __init__(self, location: Any, project_name: str) -> None:
        self.location = location  # a Path, or a WritableFileSystem block
        self.name = f"dbt-prefect-cache/{project_name}.json"

    @classmethod
    def for_config(cls, key_storage: Any, result_storage: Any, project_name: str) -> CacheStore:
        return cls(_resolve(key_storage if key_storage is not None else result_storage), project_name)

    def describe(self) -> str:
        if isinstance(self.location, Path):
            return str(self.location / self.name)
        block = getattr(self.location, "_block_document_name", None) or type(self.location).__name__
        return f"{self.name} in storage {block}"

    def load(self) -> dict[str, CacheEntry]:
        """The stored entries; {} when nothing was stored yet. Raises CacheStoreUnreadable."""
        try:
            raw = self._read()
        except FileNotFoundError:
            return {}
        except Exception as exc:
            raise CacheStoreUnreadable(f"reading it failed: {type(exc).__name__}: {exc}") from None
        if raw is None:
            return {}
        try:
            document = json.loads(raw)
            if document.get("format") != FORMAT:
                raise ValueError(f"format {document.get('format')!r}, expected {FORMAT!r}")
            return {
                unique_id: CacheEntry(
                    key=str(entry["key"]),
                    parts=dict(entry.get("parts") or {}),
                    built_at=float(entry["built_at"]),
                    expires_at=None if entry.get("expires_at") is None else float(entry["expires_at"]),
                )
                for unique_id, entry in document["nodes"].items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CacheStoreUnreadable(f"it is not a dbt-prefect cache document ({exc})") from None

    def save(self, entries: Mapping[str, CacheEntry]) -> None:
        document = {"format": FORMAT, "nodes": {u: e.as_json() for u, e in sorted(entries.items())}}
        content = json.dumps(document, indent=1).encode()
        if isinstance(self.location, Path):
            path = self.location / self.name
            path.parent.mkdir(parents=True, exist_ok=True)
            # Atomic: a build killed while writing leaves the previous document, never half of one.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cache-", suffix=".json")
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            os.replace(tmp, path)
        else:
            _resolved(self.location.write_path(self.name, content))

    def _read(self) -> bytes | None:
        if isinstance(self.location, Path):
            return (self.location / self.name).read_bytes()
        try:
            return _resolved(self.location.read_path(self.name))
        except (FileNotFoundError, ValueError) as exc:
            # Storage blocks say "not found" in their own ways; an absent document is a first build.
            text = str(exc).lower()
            if isinstance(exc, FileNotFoundError) or "not found" in text or "does not exist" in text:
                return None
            raise


def _resolve(storage: Any) -> Any:
    """A Path, or the WritableFileSystem of a block slug, a block, or Prefect's default result storage."""
    if isinstance(storage, Path):
        return storage.expanduser()
    if isinstance(storage, str):
        # The official rule: "type/name" is a block slug, anything else a local path.
        if len(storage.split("/")) == 2 and not storage.startswith((".", "~")):
            from prefect.results import resolve_result_storage

            return _local_or_block(_resolved(resolve_result_storage(storage)))
        return Path(storage).expanduser()
    if storage is None:
        from prefect.results import get_default_result_storage

        return _local_or_block(get_default_result_storage())
    return _local_or_block(storage)


def _local_or_block(block: Any) -> Any:
    """A LocalFileSystem block is its directory: written atomically, like a path."""
    basepath = getattr(block, "basepath", None)
    if type(block).__name__ == "LocalFileSystem" and basepath:
        return Path(basepath).expanduser()
    return block


def _resolved(value: Any) -> Any:
    """Prefect's storage methods are sync or async depending on the caller's context."""
    if inspect.iscoroutine(value):
        from prefect.utilities.asyncutils import run_coro_as_sync

        return run_coro_as_sync(value)
    return value
