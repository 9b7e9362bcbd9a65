"""dbt internals that ``only_changed`` needs to read stored state safely. Checked against
dbt-core 1.10 and 1.11.

Why each is needed:
- ``read_state_artifact``: dbt reads ``--state`` artifacts with its artifact classes'
  ``read_and_check_versions`` (``dbt.contracts.state.PreviousState``) and aborts the whole
  build with ``IncompatibleSchemaError`` or a parse error when one is corrupt or was
  written by another dbt version. Running the same check before the build lets a broken
  store mean "build everything, with a warning" instead of a failed build.
- ``state_read_once``: the check above loads each artifact, and dbt would load it again
  for ``--state`` (at 1,000 models, about 0.4 s for the manifest). While held, dbt's
  ``read_and_check_versions`` hands over the object already loaded for that exact file,
  once, instead of reading it again; any other file is read as usual.
- ``sources_with_freshness``: whether ``dbt source freshness`` has anything to check,
  read from the parsed manifest's ``SourceDefinition.has_freshness`` (dbt's own rule for
  which sources it checks), so freshness runs only in projects that configure it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Loaded artifacts that dbt's next read of the same file takes instead: real path -> object.
_loaded: dict[str, Any] = {}
_loaded_lock = threading.Lock()
_readers_wrapped = False


def _readers() -> dict[str, Any]:
    from dbt.artifacts.schemas.freshness import FreshnessExecutionResultArtifact
    from dbt.artifacts.schemas.manifest import WritableManifest
    from dbt.artifacts.schemas.run import RunResultsArtifact

    return {
        "manifest.json": WritableManifest,
        "run_results.json": RunResultsArtifact,
        "sources.json": FreshnessExecutionResultArtifact,
    }


def read_state_artifact(path: Path) -> tuple[Any, str | None]:
    """dbt's object for ``path`` as a --state artifact, and why dbt could not use it
    (None when it can). The object is None for a file dbt does not read as state, or when
    this dbt version keeps its artifact classes elsewhere (dbt then says at --state time)."""
    try:
        reader = _readers().get(path.name)
    except ImportError:
        return None, None
    if reader is None:
        return None, None
    try:
        return reader.read_and_check_versions(str(path)), None
    except Exception as exc:
        text = " ".join(str(exc).split())
        return None, f"{path.name}: {type(exc).__name__}: {text[:300]}"


@contextmanager
def state_read_once(loaded: dict[Path, Any]) -> Iterator[None]:
    """While held, dbt's read of each file in ``loaded`` returns its object instead
    (once; dbt's own reader for any other file). Entries left unread are dropped after."""
    keys = {os.path.realpath(path): artifact for path, artifact in loaded.items() if artifact is not None}
    if keys:
        _wrap_readers()
    with _loaded_lock:
        _loaded.update(keys)
    try:
        yield
    finally:
        with _loaded_lock:
            for key in keys:
                _loaded.pop(key, None)


def _wrap_readers() -> None:
    # Installed once and left in place: a file nobody registered is read by dbt's own
    # reader, so concurrent invocations in other threads are unaffected.
    global _readers_wrapped
    with _loaded_lock:
        if _readers_wrapped:
            return
        for reader in _readers().values():
            original = reader.read_and_check_versions.__func__

            def read_and_check_versions(cls: Any, path: str, _original: Any = original) -> Any:
                with _loaded_lock:
                    artifact = _loaded.pop(os.path.realpath(path), None)
                if artifact is not None and isinstance(artifact, cls):
                    return artifact
                return _original(cls, path)

            reader.read_and_check_versions = classmethod(read_and_check_versions)
        _readers_wrapped = True


def sources_with_freshness(manifest: Any) -> list[str]:
    """The unique_ids of the sources dbt source freshness would check."""
    return sorted(uid for uid, source in manifest.sources.items() if getattr(source, "has_freshness", False))
