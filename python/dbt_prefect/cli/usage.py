"""dbt's own complaint about a command line, asked of dbt's click parser before any flow
run exists, so `dbt-prefect` fails the way `dbt` does on a bad flag."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def dbt_usage_error(args: Sequence[str], command: str, project_dir: Path, profiles_dir: Path) -> str | None:
    """dbt's own complaint about the flags (unknown flag, bad value), before any flow run exists."""
    import click
    from dbt.cli.main import cli

    full = list(args) + ["--project-dir", str(project_dir)]
    if Path(profiles_dir).is_dir():
        full += ["--profiles-dir", str(profiles_dir)]
    try:
        # Nothing here is meant for the terminal; dbt's complaint is in the exception.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            ctx = cli.make_context("dbt", full)
            rest = list(getattr(ctx, "_protected_args", [])) + list(ctx.args)
            group: Any = cli
            while isinstance(group, click.Group) and rest:
                name, group, rest = group.resolve_command(ctx, rest)
                ctx = group.make_context(name, list(rest), parent=ctx)
                rest = list(getattr(ctx, "_protected_args", [])) + list(ctx.args)
    except click.UsageError as exc:
        if (
            isinstance(exc, click.BadParameter)
            and exc.param is not None
            and exc.param.name in ("project_dir", "profiles_dir")
        ):
            return None  # the runner reports these, with the fix
        message = exc.format_message().strip()
        if not message.endswith((".", "!", "?")):
            message += "."
        return f"dbt {command}: {message} See `dbt {command} --help`."
    except Exception:
        return None  # anything else is for dbt itself to report
    return None
