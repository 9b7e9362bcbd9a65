"""Cross-run caching (``cache=CacheConfig(...)``, PER_NODE): which nodes are unchanged since
their last successful build, in code and in data, and so need not run.

A node is a hit when its key (cache_keys.py: its code, config, macros, vars, its
parents' keys and its sources' data versions) equals the key stored when it was last
built, that build has not expired, and nothing it reads runs in this build. Everything
else runs: a miss says why (what changed, or what reads a node that runs), and nodes of
an excluded type or materialization always run.

Source data versions are read once per build, after the project's on-run-start hooks
(which may load sources), in one dbt invocation (source_versions.py): ``max(loaded_at_field)``
for a source with freshness configured, else a scan on DuckDB and PostgreSQL. A source
whose version cannot be read counts by code and config only, as in the official
orchestrator, with one warning per build that names it.
After the build, the store keeps the key of every node that succeeded, drops the key of
every node that failed, and keeps the others' as they were.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dbt_prefect.errors import DbtCommandFailed
from dbt_prefect.model.statuses import classify
from dbt_prefect.orchestrator.cache_keys import INPUT_PREFIX, KeyBuilder, NodeKey, changed_parts
from dbt_prefect.orchestrator.cache_store import CacheEntry, CacheStore, CacheStoreUnreadable
from dbt_prefect.orchestrator.freshness import SourceFreshness, source_freshness
from dbt_prefect.orchestrator.options import CacheConfig
from dbt_prefect.orchestrator.plan import NO_OP_TYPES, NodeGraph
from dbt_prefect.orchestrator.source_versions import read_source_versions

_logger = logging.getLogger("dbt_prefect")

HIT, MISS, EXCLUDED = "hit", "miss", "excluded"
_PERIOD_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class CacheDecision:
    prediction: str  # hit, miss or excluded
    reason: str
    key: NodeKey | None = None


@dataclass
class BuildCache:
    """The cache of one build: the store's entries, the source versions, the decisions."""

    config: CacheConfig
    store: CacheStore
    manifest: Any
    project_dir: Any
    vars_text: str | None
    full_refresh: bool
    entries: dict[str, CacheEntry] = field(default_factory=dict)
    versions: dict[str, str | None] = field(default_factory=dict)
    freshness: dict[str, SourceFreshness] = field(default_factory=dict)
    decisions: dict[str, CacheDecision] = field(default_factory=dict)
    checked_at: float = 0.0

    @classmethod
    def open(
        cls, config: CacheConfig, manifest: Any, project_dir: Any, vars_text: str | None, full_refresh: bool
    ) -> BuildCache:
        project_name = getattr(getattr(manifest, "metadata", None), "project_name", None) or "dbt_project"
        store = CacheStore.for_config(config.key_storage, config.result_storage, project_name)
        cache = cls(config, store, manifest, project_dir, vars_text, full_refresh)
        try:
            cache.entries = store.load()
        except CacheStoreUnreadable as exc:
            _logger.warning(
                "dbt-prefect cannot use the cache at %s: %s. Every node runs, and the cache is written anew "
                "after the build.",
                store.describe(),
                exc,
            )
        return cache

    # -- source data versions --------------------------------------------------------------
    def sources_read_by(self, unique_ids: Iterable[str]) -> list[str]:
        """The sources upstream of these nodes, through any nodes (ephemeral ones included)."""
        found: dict[str, None] = {}
        seen: set[str] = set()
        pending = list(unique_ids)
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            entry = self.manifest.nodes.get(current) or self.manifest.unit_tests.get(current)
            for parent in getattr(getattr(entry, "depends_on", None), "nodes", None) or ():
                if parent in self.manifest.sources:
                    found[parent] = None
                else:
                    pending.append(parent)
        return sorted(found)

    def read_versions(self, graph: NodeGraph, dbt_args: Sequence[str], logger: Any = _logger) -> None:
        """The data version of every source the build reads (None where unknown); the
        sources whose version is unknown are named in one warning on ``logger``.

        The caller holds the process-wide dbt lock, and ``dbt_args`` carry the rendered
        profiles directory."""
        self.checked_at = time.time()
        sources = self.sources_read_by(n.unique_id for n in graph.nodes if not self._excluded(n))
        if self.config.use_source_freshness_expiration and sources:
            try:
                self.freshness = source_freshness(self.manifest, dbt_args)
            except DbtCommandFailed as exc:
                _logger.warning("dbt-prefect caches without source-freshness expiration this time: %s", exc)
        if not sources:
            return
        relations = [self._relation(self.manifest.sources[s]) for s in sources]
        adapter_type = getattr(getattr(self.manifest, "metadata", None), "adapter_type", None)
        read = read_source_versions(self.manifest, relations, adapter_type, dbt_args)
        self.versions = dict(read.versions)
        unseen = [s for s in sources if self.versions.get(s) is None]
        if unseen:
            names = [self._name(s).removeprefix("source ") for s in unseen]
            shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
            logger.warning(
                "dbt-prefect's cache cannot see new data in %d source(s): %s (%s). The nodes that read them are "
                "cached on their code and config only, as in prefect-dbt: new rows there rebuild nothing until "
                "the cached builds expire (CacheConfig(expiration=...) or use_source_freshness_expiration).",
                len(unseen),
                shown,
                read.why_unknown,
            )

    @staticmethod
    def _relation(source: Any) -> dict[str, Any]:
        freshness = getattr(source, "freshness", None)
        configured = any(
            getattr(getattr(freshness, name, None), "count", None) for name in ("warn_after", "error_after")
        )
        loaded_at = getattr(source, "loaded_at_field", None) if configured else None
        return {
            "id": source.unique_id,
            "database": source.database,
            "schema": source.schema,
            "identifier": source.identifier,
            "loaded_at_field": loaded_at,
        }

    # -- decisions ---------------------------------------------------------------------------
    def decide(self, graph: NodeGraph, now: float | None = None) -> dict[str, CacheDecision]:
        """Hit, miss or excluded for every node of the plan, with the reason."""
        now = time.time() if now is None else now
        keys = KeyBuilder(self.manifest, self.project_dir, self.versions, self.vars_text)
        decisions: dict[str, CacheDecision] = {}
        for planned in graph.nodes:  # parents first
            decisions[planned.unique_id] = self._decide(planned, keys, decisions, now)
        self.decisions = decisions
        return decisions

    def _excluded(self, planned: Any) -> bool:
        return (
            # Exposures and saved queries build nothing: they always report no-op, at no cost.
            planned.resource_type in NO_OP_TYPES
            or planned.resource_type in self.config.exclude_resource_types
            or (planned.materialization or "") in self.config.exclude_materializations
        )

    def _decide(
        self, planned: Any, keys: KeyBuilder, decided: Mapping[str, CacheDecision], now: float
    ) -> CacheDecision:
        if self._excluded(planned):
            kind = planned.materialization if planned.materialization in self.config.exclude_materializations else None
            return CacheDecision(EXCLUDED, f"{kind or planned.resource_type} nodes are not cached")
        key = keys.key(planned.unique_id)
        if self.full_refresh:
            return CacheDecision(MISS, "full refresh: the cache is not read", key)
        if key.key is None:
            return CacheDecision(MISS, f"it reads {key.unknown_input}, which the parsed project does not have", key)
        entry = self.entries.get(planned.unique_id)
        if entry is None:
            return CacheDecision(MISS, "no earlier successful build in the cache", key)
        if entry.key != key.key:
            return CacheDecision(MISS, "changed since its last build: " + self._what_changed(key, entry), key)
        if entry.expires_at is not None and now >= entry.expires_at:
            return CacheDecision(MISS, f"its cached build expired at {_iso(entry.expires_at)}", key)
        running = self._running_input(planned.unique_id, keys, decided)
        if running is not None:
            return CacheDecision(MISS, f"{self._name(running)} runs in this build", key)
        return CacheDecision(HIT, f"cached: unchanged in code and data since its build at {_iso(entry.built_at)}", key)

    def _running_input(self, unique_id: str, keys: KeyBuilder, decided: Mapping[str, CacheDecision]) -> str | None:
        """An upstream node that runs in this build (or may not match the warehouse), else None."""
        pending = list(self._parents(unique_id))
        seen: set[str] = set()
        while pending:
            parent = pending.pop()
            if parent in seen or parent in self.manifest.sources:
                continue
            seen.add(parent)
            if parent in decided:
                if decided[parent].prediction != HIT:
                    return parent
                continue
            entry = self.manifest.nodes.get(parent)
            if getattr(getattr(entry, "config", None), "materialized", None) == "ephemeral":
                pending.extend(self._parents(parent))  # compiled into its children: look through it
                continue
            # Not built by this build: it matches its code and data only if it was built with its current key.
            stored = self.entries.get(parent)
            if stored is None or stored.key != keys.key(parent).key:
                return parent
        return None

    def _parents(self, unique_id: str) -> list[str]:
        entry = self.manifest.nodes.get(unique_id) or self.manifest.unit_tests.get(unique_id)
        return list(getattr(getattr(entry, "depends_on", None), "nodes", None) or ())

    def _what_changed(self, key: NodeKey, entry: CacheEntry) -> str:
        words = {
            "code": "its code",
            "config": "its config",
            "columns": "its columns",
            "relation": "its relation",
            "macros": "a macro it uses",
            "vars": "the build's vars",
        }
        said = []
        for part in changed_parts(key, entry.parts):
            if part.startswith(INPUT_PREFIX):
                upstream = part[len(INPUT_PREFIX) :]
                prefix = "new data in " if upstream in self.manifest.sources else ""
                said.append(prefix + self._name(upstream))
            else:
                said.append(words[part])
        return ", ".join(said) or "its key"

    def _name(self, unique_id: str | None) -> str:
        if unique_id is None:
            return "an input"
        source = self.manifest.sources.get(unique_id)
        if source is not None:
            return f"source {source.source_name}.{source.name}"
        entry = self.manifest.nodes.get(unique_id)
        return f"{entry.resource_type} {entry.name}" if entry is not None else unique_id

    def predictions(self) -> dict[str, str]:
        return {unique_id: d.prediction for unique_id, d in self.decisions.items()}

    def log_decisions(self, logger: Any) -> None:
        counts = {p: sum(1 for d in self.decisions.values() if d.prediction == p) for p in (HIT, MISS, EXCLUDED)}
        logger.info(
            "Cache at %s: %d hit(s), %d miss(es), %d excluded",
            self.store.describe(),
            counts[HIT],
            counts[MISS],
            counts[EXCLUDED],
        )
        if not self.entries and not self.full_refresh:
            logger.info("The cache holds no earlier build of this project: every node runs")
            return
        for unique_id, decision in self.decisions.items():
            if decision.prediction == MISS:
                logger.info("Cache miss for %s: %s", self._name(unique_id), decision.reason)

    # -- after the build ---------------------------------------------------------------------
    def save(self, results: Iterable[Any]) -> None:
        """Keep the key of every node that succeeded; forget every node that failed."""
        entries = dict(self.entries)
        for result in results:
            decision = self.decisions.get(result.unique_id)
            if decision is None or decision.prediction != MISS or getattr(result, "cached", False):
                continue
            info = classify(result.status)
            if info.skipped:
                continue  # not run: the warehouse holds what the stored key says
            key = decision.key
            if info.failed or key is None or key.key is None:
                entries.pop(result.unique_id, None)
                continue
            built_at = result.finished or time.time()
            entries[result.unique_id] = CacheEntry(
                key.key, dict(key.parts), built_at, self._expires(result.unique_id, built_at)
            )
        try:
            self.store.save(entries)
        except Exception as exc:
            _logger.warning(
                "dbt-prefect could not write the cache at %s (%s: %s); the next build runs the nodes this one built",
                self.store.describe(),
                type(exc).__name__,
                exc,
            )

    def _expires(self, unique_id: str, built_at: float) -> float | None:
        expiration = self.config.expiration
        seconds = expiration.total_seconds() if expiration is not None else None
        if self.config.use_source_freshness_expiration:
            remaining = self._freshness_remaining(unique_id, built_at)
            if remaining is not None:
                seconds = remaining
        return None if seconds is None else built_at + seconds

    def _freshness_remaining(self, unique_id: str, built_at: float) -> float | None:
        """Seconds until the first upstream source passes its warn_after (else error_after) threshold."""
        remaining: list[float] = []
        for source_id in self.sources_read_by([unique_id]):
            checked = self.freshness.get(source_id)
            threshold = _threshold_seconds(self.manifest.sources[source_id])
            if checked is None or checked.age_seconds is None or threshold is None:
                continue
            age = checked.age_seconds + max(built_at - self.checked_at, 0.0)
            remaining.append(max(threshold - age, 0.0))
        return min(remaining) if remaining else None


def _threshold_seconds(source: Any) -> float | None:
    freshness = getattr(source, "freshness", None)
    for name in ("warn_after", "error_after"):
        time_ = getattr(freshness, name, None)
        count, period = getattr(time_, "count", None), getattr(time_, "period", None)
        if count and period is not None:
            return float(count) * _PERIOD_SECONDS[str(getattr(period, "value", period))]
    return None


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
