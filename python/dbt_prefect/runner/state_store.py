"""Where ``only_changed`` keeps the artifacts of the last build: a local directory or a
Prefect filesystem block, so that the next build, on this machine or another, compares
against them.

The store holds dbt's own files, unchanged in format: ``manifest.json``,
``run_results.json`` and ``sources.json``. In a local directory each is written to a
temporary file beside it and moved into place, so a reader never sees half a file. The
three are written in the order run_results.json, sources.json, manifest.json: a build
interrupted between two writes leaves an older manifest beside newer results, which
selects more next time, never less (see changed.py).
"""

from __future__ import annotations

import inspect
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dbt_prefect.errors import StateStoreError

ARTIFACTS = ("manifest.json", "run_results.json", "sources.json")
# Written in this order: the manifest last (see the module docstring).
WRITE_ORDER = ("run_results.json", "sources.json", "manifest.json")
# The folder inside a block that holds one project's state.
BLOCK_PREFIX = "dbt-prefect-state"
# "local-file-system/nightly": a block type slug, a slash, a block name.
_BLOCK_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*/[^/\\]+$")


class StoredFileMissing(Exception):
    """The store has no such file (as opposed to one it could not read)."""


class StateStore(Protocol):
    def read(self, name: str) -> bytes:
        """The file's bytes; StoredFileMissing when the store has none."""
        ...

    def write(self, name: str, content: bytes) -> None: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class LocalStateStore:
    directory: Path

    def read(self, name: str) -> bytes:
        try:
            return (self.directory / name).read_bytes()
        except FileNotFoundError:
            raise StoredFileMissing(name) from None

    def write(self, name: str, content: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(content)
            os.replace(temporary, self.directory / name)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def describe(self) -> str:
        return str(self.directory)


@dataclass(frozen=True)
class BlockStateStore:
    """A Prefect WritableFileSystem block (LocalFileSystem, RemoteFileSystem, S3Bucket, ...);
    the files go under ``dbt-prefect-state/<project>/`` in it."""

    block: Any
    prefix: str
    label: str

    def read(self, name: str) -> bytes:
        try:
            content = _call_sync(self.block.read_path, f"{self.prefix}/{name}")
        except FileNotFoundError:
            raise StoredFileMissing(name) from None
        except Exception as exc:
            # Blocks say "not found" in their own words; LocalFileSystem raises ValueError.
            text = str(exc).lower()
            if any(word in text for word in ("does not exist", "not found", "no such", "nosuchkey", "404")):
                raise StoredFileMissing(name) from None
            raise
        return bytes(content)

    def write(self, name: str, content: bytes) -> None:
        _call_sync(self.block.write_path, f"{self.prefix}/{name}", content)

    def describe(self) -> str:
        return f"{self.label} ({self.prefix}/)"


def resolve_state_store(spec: Any, project_name: str) -> StateStore:
    """The store that ``state_store`` names: a path, a block slug, a block, or a ResultStore."""
    if isinstance(spec, Path):
        return LocalStateStore(spec.expanduser())
    if isinstance(spec, str):
        text = spec.strip()
        if not text:
            raise StateStoreError(_NO_STORE)
        if _BLOCK_SLUG.match(text) and not Path(text).expanduser().exists():
            return BlockStateStore(_load_block(text), f"{BLOCK_PREFIX}/{project_name}", f"block {text}")
        return LocalStateStore(Path(text).expanduser())
    storage = getattr(spec, "result_storage", None)  # a prefect.results.ResultStore
    if storage is not None and not callable(getattr(spec, "write_path", None)):
        spec = storage
    if callable(getattr(spec, "read_path", None)) and callable(getattr(spec, "write_path", None)):
        name = getattr(spec, "_block_document_name", None)
        label = f"{type(spec).__name__} block {name}" if name else f"{type(spec).__name__} block"
        return BlockStateStore(spec, f"{BLOCK_PREFIX}/{project_name}", label)
    raise StateStoreError(
        f"state_store={spec!r} is not a place dbt-prefect can keep state "
        "(give a local directory, a Prefect block slug such as 'local-file-system/dbt-state', "
        "a WritableFileSystem block, or a ResultStore)"
    )


_NO_STORE = (
    "only_changed needs a state store to compare against: none was given "
    "(pass PrefectDbtRunner(state_store='path/to/dir' or 'block-type/block-name'), "
    "or --state-store PATH / DBT_PREFECT_STATE_STORE on the command line)"
)


def missing_store_error() -> StateStoreError:
    return StateStoreError(_NO_STORE)


def _load_block(slug: str) -> Any:
    from prefect.blocks.core import Block

    try:
        block = _call_sync(Block.load, slug)
    except Exception as exc:
        raise StateStoreError(
            f"state store {slug!r} looks like a Prefect block slug, but no such block can be loaded: {exc} "
            "(create the block, fix its name, or write a local directory as ./" + slug + ")"
        ) from None
    if not (callable(getattr(block, "read_path", None)) and callable(getattr(block, "write_path", None))):
        raise StateStoreError(
            f"block {slug!r} is a {type(block).__name__}, which cannot store files "
            "(use a filesystem block such as local-file-system, remote-file-system or s3-bucket)"
        )
    return block


def _call_sync(function: Any, *args: Any) -> Any:
    """Call a Prefect block method synchronously, even from inside an async flow."""
    try:
        result = function(*args, _sync=True)
    except TypeError as exc:
        if "_sync" not in str(exc):
            raise
        result = function(*args)
    if inspect.iscoroutine(result):
        from prefect.utilities.asyncutils import run_coro_as_sync

        result = run_coro_as_sync(result)
    return result
