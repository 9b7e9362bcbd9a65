"""The orchestrator's options with the official names: execution modes, test strategies,
caching, and the checks that reject combinations that cannot work."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from dbt_prefect.errors import OrchestratorUsageError


class ExecutionMode(enum.StrEnum):
    """How the orchestrator hands nodes to dbt.

    PER_WAVE: one dbt invocation per wave of the DAG, in the flow's process.
    PER_NODE: one task per node on the flow's task runner (threads, processes, Dask).
    """

    PER_NODE = "per_node"
    PER_WAVE = "per_wave"


class TestStrategy(enum.StrEnum):
    """When dbt tests run: IMMEDIATE (gating their children, as dbt build), DEFERRED
    (after every model, seed and snapshot), or SKIP (not at all)."""

    __test__ = False  # not a pytest test class

    IMMEDIATE = "immediate"
    DEFERRED = "deferred"
    SKIP = "skip"


_DEFAULT_CACHE_EXCLUDED_TYPES = frozenset({"test", "snapshot", "unit_test"})


@dataclass(frozen=True)
class CacheConfig:
    """Cross-run caching of unchanged nodes (PER_NODE mode); the official fields."""

    expiration: timedelta | None = None
    result_storage: Any | str | Path | None = None
    key_storage: Any | str | Path | None = None
    use_source_freshness_expiration: bool = False
    exclude_materializations: frozenset[str] = frozenset({"incremental"})
    exclude_resource_types: frozenset[Any] = _DEFAULT_CACHE_EXCLUDED_TYPES

    def __post_init__(self) -> None:
        # dbt's NodeType members hash by name, not by value: keep plain strings.
        types = frozenset(str(getattr(t, "value", t)) for t in self.exclude_resource_types)
        object.__setattr__(self, "exclude_resource_types", types)
        object.__setattr__(self, "exclude_materializations", frozenset(self.exclude_materializations))


def as_execution_mode(value: Any) -> ExecutionMode:
    try:
        return ExecutionMode(getattr(value, "value", value))
    except ValueError:
        allowed = ", ".join(f"ExecutionMode.{m.name}" for m in ExecutionMode)
        raise OrchestratorUsageError(f"execution_mode must be one of {allowed}, not {value!r}") from None


def as_test_strategy(value: Any) -> TestStrategy:
    try:
        return TestStrategy(getattr(value, "value", value))
    except ValueError:
        allowed = ", ".join(f"TestStrategy.{s.name}" for s in TestStrategy)
        raise OrchestratorUsageError(f"test_strategy must be one of {allowed}, not {value!r}") from None


def check_combination(mode: ExecutionMode, retries: int, cache: CacheConfig | None, concurrency: Any) -> None:
    """The official rules: retries and caching need PER_NODE; concurrency is a count or a limit's name."""
    if retries and mode is not ExecutionMode.PER_NODE:
        raise OrchestratorUsageError(
            f"retries={retries} needs per-node execution: a wave is one dbt invocation, so its nodes "
            "cannot retry alone. Pass execution_mode=ExecutionMode.PER_NODE, or retries=0."
        )
    if cache is not None and mode is not ExecutionMode.PER_NODE:
        raise OrchestratorUsageError(
            "cache= needs per-node execution: a wave runs all its nodes in one dbt invocation. "
            "Pass execution_mode=ExecutionMode.PER_NODE, or leave cache=None."
        )
    if retries < 0:
        raise OrchestratorUsageError(f"retries must be 0 or more, not {retries}")
    if isinstance(concurrency, bool) or (isinstance(concurrency, int) and concurrency < 1):
        raise OrchestratorUsageError(
            "concurrency must be a positive integer or the name of a Prefect global concurrency limit, "
            f"not {concurrency!r}"
        )
