"""run_results.json for an orchestrated build, in the schema the installed dbt writes.

The orchestrator runs a build as many dbt invocations, so no single one leaves a
run_results.json that covers the build; this module writes one from the orchestrator's
per-node records. The file is built with dbt's own artifact classes (``dbt.artifacts``,
dbt's versioned schema package; checked against dbt-core 1.11, run-results v6), so the
schema URL, field names and serialisation are dbt's, and they follow dbt on upgrade.

What ``dbt retry`` needs, from dbt/task/retry.py:
- ``args["which"]``: the command to rerun. An orchestrated build is ``"build"``.
- each result's ``unique_id`` and ``status``: it reruns exactly the nodes whose status is
  error, fail, skipped, runtime error or partial success (operation.* hooks excepted).
- the other args are turned back into command-line flags for the rerun (so target, vars,
  full_refresh, threads, state... carry over); values equal to dbt's defaults are dropped,
  and project_dir and profiles_dir are always taken from the retry's own command line.

Callers pass dbt statuses (``NodeStatus`` values). A status dbt lacks, such as the
orchestrator's "cached", must be mapped to one before a record is built: it raises here.

Secrets: ``args`` holds only the invocation args given, and vars named ``DBT_ENV_SECRET_*``
are scrubbed as dbt scrubs them; ``metadata.env`` is always empty (dbt would copy the
``DBT_ENV_CUSTOM_ENV_*`` environment variables there).
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dbt.artifacts.schemas.results import FreshnessStatus, RunStatus, TestStatus, TimingInfo
from dbt.artifacts.schemas.run import RunResultOutput, RunResultsArtifact, RunResultsMetadata, process_run_result
from dbt.constants import RUN_RESULTS_FILE_NAME
from dbt_common.constants import SECRET_ENV_PREFIX
from dbt_common.exceptions import scrub_secrets

# Multi-value flags that dbt writes as lists even when given one selector.
_LIST_ARGS = frozenset({"select", "exclude", "resource_types", "exclude_resource_types"})


@dataclass(frozen=True)
class NodeRunRecord:
    """One node's result in an orchestrated build, as run_results.json reports it."""

    unique_id: str
    status: str  # a dbt NodeStatus value (model/statuses.py)
    message: str | None = None
    started_at: datetime | None = None  # aware UTC
    completed_at: datetime | None = None
    execution_time: float = 0.0
    failures: int | None = None
    adapter_response: Mapping[str, Any] = field(default_factory=dict)
    thread_id: str = "Thread-1"
    compiled_code: str | None = None
    relation_name: str | None = None


def record_from_dbt_result(run_result: Any) -> NodeRunRecord:
    """The record of one of dbt's own RunResult objects (``dbtRunnerResult.result.results``)."""
    # dbt's own conversion decides compiled_code and relation_name (None for seeds, as dbt writes).
    output = process_run_result(run_result)
    starts = [t.started_at for t in output.timing if t.started_at is not None]
    ends = [t.completed_at for t in output.timing if t.completed_at is not None]
    return NodeRunRecord(
        unique_id=output.unique_id,
        status=str(output.status),
        message=output.message,
        started_at=_aware(min(starts)) if starts else None,
        completed_at=_aware(max(ends)) if ends else None,
        execution_time=float(output.execution_time),
        failures=output.failures,
        adapter_response=dict(output.adapter_response or {}),
        thread_id=output.thread_id,
        compiled_code=output.compiled_code,
        relation_name=output.relation_name,
    )


def write_run_results(
    target_dir: Path,
    records: Sequence[NodeRunRecord],
    *,
    elapsed_seconds: float,
    invocation_args: Mapping[str, Any],
    invocation_id: str | None = None,
) -> Path:
    """Write target_dir/run_results.json (atomically: temp file + rename) and return its path.

    ``invocation_args`` are what the build stands for (select, exclude, full_refresh,
    target, project_dir, profiles_dir, threads, vars, state, defer...), with dbt's flag
    names; ``which`` is always ``"build"``.
    """
    generated_at = datetime.now(UTC)
    starts = [r.started_at for r in records if r.started_at is not None]
    artifact = RunResultsArtifact(
        metadata=RunResultsMetadata(
            dbt_schema_version=str(RunResultsArtifact.dbt_schema_version),
            generated_at=_naive(generated_at),
            invocation_id=invocation_id or str(uuid.uuid4()),
            # dbt retry reads it as the original start of microbatch models' runs.
            invocation_started_at=_naive(min(starts) if starts else generated_at),
            env={},
        ),
        results=[_output(record) for record in records],
        elapsed_time=float(elapsed_seconds),
        args=_args(invocation_args),
    )
    # Serialise before touching the disk, so that a bad record leaves the old file as it was.
    text = json.dumps(artifact.to_dict(omit_none=False), indent=2)
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / RUN_RESULTS_FILE_NAME
    fd, temp_name = tempfile.mkstemp(dir=target_dir, prefix=f".{RUN_RESULTS_FILE_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # A concurrent reader (dbt retry, a docs build) sees the old file or the new one, never half.
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def _output(record: NodeRunRecord) -> RunResultOutput:
    timing = []
    if record.started_at is not None or record.completed_at is not None:
        # One span for the node: dbt splits it into compile and execute, which records do not keep apart.
        started = _naive(record.started_at) if record.started_at else None
        completed = _naive(record.completed_at) if record.completed_at else None
        timing.append(TimingInfo("execute", started, completed))
    return RunResultOutput(
        unique_id=record.unique_id,
        status=_dbt_status(record.status),
        timing=timing,
        thread_id=record.thread_id,
        execution_time=float(record.execution_time),
        adapter_response=dict(record.adapter_response),
        message=record.message,
        failures=record.failures,
        # dbt writes node.compiled here, which records do not carry; compiled code stands for it.
        compiled=record.compiled_code is not None,
        compiled_code=record.compiled_code,
        relation_name=record.relation_name,
        batch_results=None,
    )


def _dbt_status(status: str) -> RunStatus | TestStatus | FreshnessStatus:
    # The artifact's status field is typed as the union of these three enums.
    for enum in (RunStatus, TestStatus, FreshnessStatus):
        try:
            return enum(status)
        except ValueError:
            continue
    known = sorted({s.value for e in (RunStatus, TestStatus, FreshnessStatus) for s in e})
    raise ValueError(f"{status!r} is not a dbt node status; map it to one of {known} before writing run_results.json")


def _args(invocation_args: Mapping[str, Any]) -> dict[str, Any]:
    """The artifact's ``args``: the given args under dbt's flag names, plus ``which``."""
    args: dict[str, Any] = {}
    for key, value in invocation_args.items():
        # dbt retry turns None into --no-<flag>, which most flags reject; dbt omits None too.
        if value is None:
            continue
        name = key.lower().lstrip("-").replace("-", "_")
        if name in _LIST_ARGS and isinstance(value, str):
            value = [value]
        elif isinstance(value, tuple | list | set | frozenset):
            value = list(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        args[name] = value
    if isinstance(args.get("vars"), dict):
        args["vars"] = _scrub_secret_vars(args["vars"])
    args["which"] = "build"
    return args


def _scrub_secret_vars(vars_: dict[str, Any]) -> dict[str, Any]:
    # What dbt does to its own run_results.json (RunResultsArtifact.from_execution_results).
    secrets = [str(v) for k, v in vars_.items() if k.startswith(SECRET_ENV_PREFIX) and str(v).strip()]
    return {k: scrub_secrets(v, secrets) for k, v in vars_.items()} if secrets else vars_


def _aware(moment: datetime) -> datetime:
    # dbt's timing is naive UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _naive(moment: datetime) -> datetime:
    # dbt serialises naive UTC datetimes with a trailing "Z", as its own artifacts have them.
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)
