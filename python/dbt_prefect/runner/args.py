"""What an invoke() call asks dbt to do: its command and the flags dbt-prefect must know."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import click
from dbt.cli.main import cli

from dbt_prefect.errors import DbtArgumentsError

# Flags whose values dbt-prefect reads before dbt starts (dbt reads them too).
_VALUE_FLAGS = {
    "--project-dir": "project_dir",
    "--profiles-dir": "profiles_dir",
    "--target-path": "target_path",
    "--log-level": "log_level",
    "--target": "target",
    "-t": "target",
    "--profile": "profile",
    "--vars": "vars",
}


@dataclass(frozen=True)
class DbtInvocation:
    args: tuple[str, ...]
    command: str  # e.g. "build", "source freshness", "docs generate"
    flags: dict[str, str] = field(default_factory=dict)

    def given(self, name: str, kwargs: dict[str, Any]) -> Any | None:
        """A setting given as a flag or an invoke() kwarg; kwargs win, as in dbtRunner."""
        if name in kwargs and kwargs[name] is not None:
            return kwargs[name]
        return self.flags.get(name)

    def fails_fast(self, kwargs: dict[str, Any]) -> bool:
        """Whether dbt runs with --fail-fast (flag, invoke kwarg or DBT_FAIL_FAST)."""
        if "fail_fast" in kwargs:
            return bool(kwargs["fail_fast"])
        if any(arg in ("--fail-fast", "-x") for arg in self.args):
            return True
        return os.environ.get("DBT_FAIL_FAST", "").strip().lower() in ("1", "true", "yes")

    @property
    def operation_name(self) -> str:
        """The macro of a ``run-operation``; empty for other commands."""
        args = list(self.args)
        if "run-operation" in args and args.index("run-operation") + 1 < len(args):
            return args[args.index("run-operation") + 1]
        return ""

    def args_without(self, flags: Sequence[str]) -> list[str]:
        """The arguments with these flags (and their values) taken out."""
        kept: list[str] = []
        skip_next = False
        for token in self.args:
            if skip_next:
                skip_next = False
                continue
            name, eq, _ = token.partition("=")
            if name in flags:
                skip_next = not eq
                continue
            kept.append(token)
        return kept


def _command_path(args: Sequence[str]) -> list[str]:
    try:
        ctx = cli.make_context(cli.name, list(args), resilient_parsing=True)
        rest = list(getattr(ctx, "_protected_args", [])) + list(ctx.args)
        command: Any = cli
        names: list[str] = []
        while isinstance(command, click.Group) and rest:
            token = rest[0]
            name, command, rest = command.resolve_command(ctx, rest)
            if command is None:  # resilient parsing reports no error for an unknown command
                raise click.UsageError(f"No such command {token!r}.")
            names.append(name or token)
            if isinstance(command, click.Group):
                ctx = command.make_context(name, list(rest), parent=ctx, resilient_parsing=True)
                rest = list(getattr(ctx, "_protected_args", [])) + list(ctx.args)
        return names
    except click.UsageError as exc:
        raise DbtArgumentsError(
            f"dbt cannot run {list(args)!r}: {exc.format_message()} "
            "(the arguments are dbt's own: check them with `dbt --help`)"
        ) from None


def parse_invocation(args: Sequence[str]) -> DbtInvocation:
    if isinstance(args, (str, bytes)) or not all(isinstance(a, str) for a in args):
        raise DbtArgumentsError(
            f"invoke() takes a list of strings, as dbtRunner does, e.g. invoke(['build', '--select', 'orders']); got {args!r}"
        )
    args = tuple(args)
    names = _command_path(args)
    if not names:
        raise DbtArgumentsError("invoke() was given no dbt command: pass one, e.g. invoke(['build'])")
    flags: dict[str, str] = {}
    i = 0
    while i < len(args):
        token = args[i]
        name, eq, value = token.partition("=")
        key = _VALUE_FLAGS.get(name)
        if key is not None:
            if eq:
                flags[key] = value
            elif i + 1 < len(args):
                flags[key] = args[i + 1]
                i += 1
        i += 1
    return DbtInvocation(args=args, command=" ".join(names), flags=flags)


def command_params(args: Sequence[str]) -> dict[str, Any]:
    """The values dbt's command line parser gives the command's parameters (flags,
    environment variables, defaults), e.g. ``select`` and ``full_refresh`` for a build."""
    ctx = cli.make_context(cli.name, list(args), resilient_parsing=True)
    params = dict(ctx.params)
    rest = list(getattr(ctx, "_protected_args", [])) + list(ctx.args)
    command: Any = cli
    while isinstance(command, click.Group) and rest:
        name, command, rest = command.resolve_command(ctx, rest)
        if command is None:
            break
        ctx = command.make_context(name, list(rest), parent=ctx, resilient_parsing=True)
        params.update(ctx.params)
        rest = list(getattr(ctx, "_protected_args", [])) + list(ctx.args)
    return params
