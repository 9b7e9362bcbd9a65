"""dbt internals that ``only_changed`` needs to read stored state safely. Checked against
dbt-core 1.10 and 1.11.

Why each is needed:
- ``unreadable_artifact``: dbt reads ``--state`` artifacts with its artifact classes'
  ``read_and_check_versions`` (``dbt.contracts.state.PreviousState``) and aborts the whole
  build with ``IncompatibleSchemaError`` or a parse error when one is corrupt or was
  written by another dbt version. Running the same check before the build lets a broken
  store mean "build everything, with a warning" instead of a failed build.
- ``sources_with_freshness``: whether ``dbt source freshness`` has anything to check,
  read from the parsed manifest's ``SourceDefinition.has_freshness`` (dbt's own rule for
  which sources it checks), so freshness runs only in projects that configure it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def unreadable_artifact(path: Path) -> str | None:
    """Why dbt could not use ``path`` as a --state artifact, or None when it can."""
    try:
        from dbt.artifacts.schemas.freshness import FreshnessExecutionResultArtifact
        from dbt.artifacts.schemas.manifest import WritableManifest
        from dbt.artifacts.schemas.run import RunResultsArtifact
    except ImportError:  # a dbt version that moved them: dbt will say at --state time
        return None
    reader: Any = {
        "manifest.json": WritableManifest,
        "run_results.json": RunResultsArtifact,
        "sources.json": FreshnessExecutionResultArtifact,
    }.get(path.name)
    if reader is None:
        return None
    try:
        reader.read_and_check_versions(str(path))
    except Exception as exc:
        text = " ".join(str(exc).split())
        return f"{path.name}: {type(exc).__name__}: {text[:300]}"
    return None


def sources_with_freshness(manifest: Any) -> list[str]:
    """The unique_ids of the sources dbt source freshness would check."""
    return sorted(uid for uid, source in manifest.sources.items() if getattr(source, "has_freshness", False))
