"""Source freshness for ``run_build(only_fresh_sources=True)``: which sources are stale, and
which selected nodes sit downstream of one.

``source_freshness`` runs ``dbt source freshness`` in-process on the manifest the build
already parsed, and reads dbt's answer from the invocation's result, never from a file.
dbt writes ``sources.json`` into the target path, as ``dbt source freshness`` always
does: ``--output`` is deprecated in dbt 1.11, and ``sources.json`` in the target path is
what ``--select source_status:fresher+ --state ...`` compares, so a user expects the latest
check there. dbt also runs the project's hooks around the check when the project sets
``source_freshness_run_project_hooks``, as the plain dbt command does.

A source is stale when dbt's status for it is ``error`` (past ``error_after``) or
``runtime error`` (dbt could not measure it, so nothing says its data is usable). ``warn``
is not stale: the source is past ``warn_after`` but still within ``error_after``, dbt's
early notice (the official prefect-dbt draws the same line). A source with only
``warn_after`` therefore never stops a build. Sources without a freshness config are not
checked by dbt and count as fresh.

dbt keeps process-wide state: the caller holds ``runner.invocation.DBT_INVOCATION_LOCK``
around ``source_freshness``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dbt.cli.main import dbtRunner
from dbt.contracts.graph.manifest import Manifest

from dbt_prefect.errors import DbtCommandFailed
from dbt_prefect.model.nodes import NodeCatalog
from dbt_prefect.model.statuses import (
    ERROR,
    FRESHNESS_STATUSES,
    RUNTIME_ERROR,
    STALE_FRESHNESS_STATUSES,
    WARN,
    is_failure,
)


@dataclass(frozen=True)
class SourceFreshness:
    """dbt's freshness outcome for one source it checked."""

    unique_id: str
    status: str  # one of dbt's FRESHNESS_STATUSES
    max_loaded_at: datetime | None
    age_seconds: float | None
    # The threshold the source crossed ("error after 24 hours") when it is warn or error;
    # otherwise every configured threshold ("warn after 12 hours, error after 24 hours").
    criteria: str | None
    # dbt's message for a runtime error, e.g. the database error of the loaded_at query.
    error: str | None = None

    @property
    def stale(self) -> bool:
        return self.status in STALE_FRESHNESS_STATUSES


def source_freshness(manifest: Manifest, dbt_args: Sequence[str]) -> dict[str, SourceFreshness]:
    """dbt's freshness outcome per source it checked, by unique_id.

    ``dbt_args`` are the build's common arguments (--project-dir, the rendered
    --profiles-dir, --target-path, --target, --vars ...). Raises DbtCommandFailed when dbt
    could not check the sources; stale sources are an answer, not a failure.
    """
    outcome = dbtRunner(manifest=manifest).invoke(["source", "freshness", *dbt_args], log_level="none")
    exception = outcome.exception
    results = getattr(outcome.result, "results", None)
    if exception is not None or results is None:
        detail = str(exception).strip() if exception is not None else "dbt returned no results"
        raise DbtCommandFailed(
            f"dbt source freshness failed, so only_fresh_sources cannot tell which sources are stale: {detail}\n"
            "(fix the error above, or run the build without only_fresh_sources)"
        )
    checked: dict[str, SourceFreshness] = {}
    unchecked: list[str] = []
    failed_hooks: list[str] = []
    for result in results:
        node = result.node
        status = str(getattr(result.status, "value", result.status))
        if str(getattr(node.resource_type, "value", node.resource_type)) != "source":  # a project hook
            if is_failure(status):
                failed_hooks.append(str(result.message or node.unique_id).strip())
        elif status in FRESHNESS_STATUSES:
            checked[node.unique_id] = _outcome(result, node, status)
        else:
            unchecked.append(_source_name(node))
    if unchecked:
        # dbt skips every source when an on-run-start hook fails.
        cause = "; ".join(failed_hooks) or "dbt did not say why"
        raise DbtCommandFailed(
            f"dbt source freshness did not check {', '.join(sorted(unchecked))}: {cause}\n"
            "(fix the failing hook; dbt runs the project's hooks around source freshness "
            "when the project flag source_freshness_run_project_hooks is true)"
        )
    return checked


def stale_upstream(
    catalog: NodeCatalog, selected: Iterable[str], freshness: Mapping[str, SourceFreshness]
) -> dict[str, str]:
    """For each selected node with a stale source above it (through any nodes, ephemeral
    models included), one line naming the stale sources, in the order of their names."""
    stale = {uid: f for uid, f in freshness.items() if f.stale}
    if not stale:
        return {}
    above: dict[str, frozenset[str]] = {}
    reasons: dict[str, str] = {}
    for unique_id in selected:
        node = catalog.get(unique_id)
        if node is None:
            continue
        sources = frozenset[str]().union(*(_stale_at_or_above(p, catalog, stale, above) for p in node.depends_on))
        if sources:
            reasons[unique_id] = _reason(sorted((_display_name(catalog, s), stale[s]) for s in sources))
    return reasons


def _stale_at_or_above(
    unique_id: str, catalog: NodeCatalog, stale: Mapping[str, SourceFreshness], above: dict[str, frozenset[str]]
) -> frozenset[str]:
    """The stale sources among ``unique_id`` and its ancestors, memoised in ``above``.

    Depth-first with an explicit stack: a long chain of models must not hit Python's
    recursion limit. dbt refuses cyclic graphs, so the walk ends.
    """
    stack = [unique_id]
    while stack:
        current = stack[-1]
        if current in above:
            stack.pop()
            continue
        node = catalog.get(current)
        parents = node.depends_on if node is not None else ()
        pending = [p for p in parents if p not in above]
        if pending:
            stack.extend(pending)
            continue
        own = frozenset({current}) if current in stale else frozenset()
        above[current] = own.union(*(above[p] for p in parents))
        stack.pop()
    return above[unique_id]


def _reason(sources: list[tuple[str, SourceFreshness]]) -> str:
    if len(sources) == 1:
        name, outcome = sources[0]
        return f"upstream source {name} is stale ({_detail(outcome)})"
    listed = ", ".join(f"{name} ({_detail(outcome)})" for name, outcome in sources)
    return f"upstream sources are stale: {listed}"


def _detail(outcome: SourceFreshness) -> str:
    if outcome.status == RUNTIME_ERROR:
        return "freshness check failed with a runtime error"
    parts = [outcome.criteria] if outcome.criteria else []
    if outcome.max_loaded_at is not None and outcome.max_loaded_at.year == 1:
        # dbt's stand-in when the loaded_at query found no value (an empty table).
        parts.append("no load time recorded")
    elif outcome.age_seconds is not None:
        parts.append(f"last loaded {_age(outcome.age_seconds)} ago")
    return "; ".join(parts) or f"freshness status {outcome.status}"


def _age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.1f} minutes"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:.1f} days"


def _outcome(result: Any, node: Any, status: str) -> SourceFreshness:
    thresholds = getattr(node, "freshness", None)
    crossed = {WARN: "warn_after", ERROR: "error_after"}.get(status)
    names = (crossed,) if crossed else ("warn_after", "error_after")
    texts = [_threshold(name, getattr(thresholds, name, None)) for name in names]
    criteria = ", ".join(t for t in texts if t) or None
    age = getattr(result, "age", None)
    return SourceFreshness(
        unique_id=node.unique_id,
        status=status,
        max_loaded_at=getattr(result, "max_loaded_at", None),
        age_seconds=float(age) if age is not None else None,
        criteria=criteria,
        error=str(result.message) if status == RUNTIME_ERROR and result.message else None,
    )


def _threshold(name: str, time: Any) -> str | None:
    """``error after 24 hours`` for dbt's Time(count=24, period=hour) under ``error_after``."""
    count, period = getattr(time, "count", None), getattr(time, "period", None)
    if count is None or period is None:
        return None
    unit = str(getattr(period, "value", period))
    return f"{name.replace('_', ' ')} {count} {unit if count == 1 else unit + 's'}"


def _source_name(node: Any) -> str:
    return f"{node.source_name}.{node.name}" if getattr(node, "source_name", None) else node.unique_id


def _display_name(catalog: NodeCatalog, unique_id: str) -> str:
    entry = catalog.manifest_entry(unique_id)
    return _source_name(entry) if entry is not None else unique_id
