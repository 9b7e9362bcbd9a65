"""The manifest of a run that writes no JSON (``--no-write-json``), parsed ahead.

dbt hands its parsed manifest to the plugin hook that the runner reads (_compat/dbt_plugin.py)
only when it writes manifest.json. Without it, the nodes would get no asset keys and no
lineage; so the runner parses first, without writing, and dbt builds on that manifest
without parsing again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dbt.cli.main import dbtRunner

from dbt_prefect.runner.args import DbtInvocation

# Commands that run the project's nodes: their asset keys come from the manifest.
_NODE_COMMANDS = frozenset({"build", "run", "test", "seed", "snapshot", "source freshness"})


def writes_no_json(invocation: DbtInvocation, kwargs: dict[str, Any]) -> bool:
    """Whether dbt runs this node command without writing manifest.json (--no-write-json)."""
    if invocation.command not in _NODE_COMMANDS:
        return False
    if "write_json" in kwargs:
        return not kwargs["write_json"]
    flags = [a for a in invocation.args if a in ("--write-json", "--no-write-json")]
    if flags:
        return flags[-1] == "--no-write-json"
    return os.environ.get("DBT_WRITE_JSON", "").strip().lower() in ("0", "false", "no")


def parsed_without_json(
    invocation: DbtInvocation, kwargs: dict[str, Any], project_dir: Path, profiles_dir: Path, target_path: Any
) -> Any:
    """The manifest, parsed without writing; None if the parse fails (dbt's own run says why)."""
    args = ["parse", "--no-write-json", "--project-dir", str(project_dir), "--profiles-dir", str(profiles_dir)]
    if target_path is not None:
        args += ["--target-path", str(target_path)]
    for name, flag in (("target", "--target"), ("profile", "--profile"), ("vars", "--vars")):
        value = invocation.given(name, kwargs)
        if value is not None:
            args += [flag, value if isinstance(value, str) else json.dumps(value)]
    parsed = dbtRunner().invoke(args, log_level="none")
    return parsed.result if parsed.success else None
