"""``extra_cli_args`` of run_build: what may pass through to dbt, and what may not.

The orchestrator owns selection, paths and logging, and has parameters of its own for
some flags; a flag it manages is refused with the parameter to use instead. A few flags
work but can change which nodes run in a wave, so they pass with a warning.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import yaml

from dbt_prefect.errors import OrchestratorUsageError

_logger = logging.getLogger("dbt_prefect")

# Flag (and its short forms) -> why the orchestrator cannot let it through.
_REFUSED: dict[tuple[str, ...], str] = {
    ("--select", "-s"): "the orchestrator selects the nodes itself: use run_build(select=...)",
    ("--models", "-m"): "the orchestrator selects the nodes itself: use run_build(select=...)",
    ("--exclude",): "the orchestrator selects the nodes itself: use run_build(exclude=...)",
    ("--selector",): "a YAML selector would replace the nodes the orchestrator planned: use run_build(select=...)",
    ("--indirect-selection",): "the test strategy decides which tests run: use test_strategy=TestStrategy...",
    ("--project-dir",): "the project comes from the settings: use PrefectDbtSettings(project_dir=...)",
    ("--profiles-dir",): "profiles.yml comes from the settings: use PrefectDbtSettings(profiles_dir=...)",
    ("--target-path",): "the target path comes from the settings: use PrefectDbtSettings(target_path=...)",
    ("--log-level",): "dbt's logs go to Prefect at the settings' level: use PrefectDbtSettings(log_level=...)",
}

# Flags that have a parameter of their own.
_PARAMETERS: dict[tuple[str, ...], str] = {
    ("--full-refresh",): "run_build(full_refresh=True)",
    ("--target", "-t"): "run_build(target='...')",
    ("--threads",): "PrefectDbtOrchestrator(threads=N)",
    ("--defer",): "PrefectDbtOrchestrator(defer=True)",
    ("--state",): "PrefectDbtOrchestrator(state_path=Path(...))",
    ("--defer-state",): "PrefectDbtOrchestrator(defer_state_path=Path(...))",
    ("--favor-state",): "PrefectDbtOrchestrator(favor_state=True)",
}

_WARNED: dict[tuple[str, ...], str] = {
    ("--resource-type",): "it can drop tests the test strategy placed in a wave",
    ("--exclude-resource-type",): "it can drop tests the test strategy placed in a wave",
    ("--fail-fast", "-x"): "in per-wave mode dbt stops the rest of the wave at the first failure",
}


def _flag_of(token: str) -> str | None:
    if not token.startswith("-"):
        return None
    return token.partition("=")[0]


def _lookup(table: dict[tuple[str, ...], str], flag: str) -> tuple[str, str] | None:
    for names, text in table.items():
        # --no-defer, --no-favor-state: the negative forms count as the flag itself.
        if flag in names or flag.replace("--no-", "--", 1) in names:
            return names[0], text
    return None


def validate_extra_cli_args(extra_cli_args: Sequence[str] | None) -> list[str]:
    """The extra arguments as a list; a refused flag raises OrchestratorUsageError."""
    if extra_cli_args is None:
        return []
    if isinstance(extra_cli_args, str):
        raise OrchestratorUsageError(
            f"extra_cli_args must be a list of arguments, not the string {extra_cli_args!r}: "
            f"pass {extra_cli_args.split()!r}"
        )
    args = [str(a) for a in extra_cli_args]
    for token in args:
        flag = _flag_of(token)
        if flag is None:
            continue
        refused = _lookup(_REFUSED, flag)
        if refused is not None:
            raise OrchestratorUsageError(f"extra_cli_args cannot contain {refused[0]}: {refused[1]}")
        parameter = _lookup(_PARAMETERS, flag)
        if parameter is not None:
            raise OrchestratorUsageError(f"extra_cli_args cannot contain {parameter[0]}: use {parameter[1]} instead")
        warned = _lookup(_WARNED, flag)
        if warned is not None:
            _logger.warning("extra_cli_args contains %s, which dbt-prefect passes on, but %s", warned[0], warned[1])
    return args


def take_vars(extra: list[str], vars: dict[str, Any] | None) -> tuple[list[str], str | None]:
    """``--vars`` out of the extra arguments, merged with run_build's own ``vars``."""
    kept: list[str] = []
    merged: dict[str, Any] = {}
    tokens = iter(extra)
    for token in tokens:
        name, eq, value = token.partition("=")
        if name != "--vars":
            kept.append(token)
            continue
        text = value if eq else next(tokens, "")
        try:
            parsed = yaml.safe_load(text) if text else {}
        except Exception as exc:
            raise OrchestratorUsageError(f"extra_cli_args has --vars that are not YAML or JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise OrchestratorUsageError(f"extra_cli_args has --vars that are not a mapping: {text!r}")
        merged.update(parsed)
    merged.update(vars or {})
    return kept, json.dumps(merged, sort_keys=True) if merged else None
