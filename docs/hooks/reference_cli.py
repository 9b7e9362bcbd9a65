"""The command-line reference, read from the typer app of ``dbt-prefect`` at build time.

Every command, its help, its usage line and its options come from the click command tree
that typer builds from ``dbt_prefect.cli.main.app``, so a command or an option added there
is in the reference on the next build. Commands that take the same options (the dbt
commands all do) share one table of options.

Typer 0.29 carries its own copy of click, so the tree is read by duck typing (a group has
``list_commands``, an option's ``param_type_name`` is "option"), not against ``click``'s classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def _is_group(command: Any) -> bool:
    return hasattr(command, "list_commands")


def _context(command: Any, name: str, parent: Any = None) -> Any:
    return command.context_class(command, info_name=name, parent=parent, **(command.context_settings or {}))


def walk(command: Any, ctx: Any) -> Iterator[tuple[Any, Any]]:
    """Every command under ``command`` (groups included), depth first, in the app's order."""
    yield command, ctx
    if _is_group(command):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from walk(sub, _context(sub, name, ctx))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _option_row(param: Any, ctx: Any) -> tuple[str, str, str, str]:
    # The option as `--help` prints it: its names and metavar (`--state-store PATH`).
    record = param.get_help_record(ctx)
    names = f"`{record[0]}`" if record else ", ".join(f"`{name}`" for name in param.opts)
    envvar = param.envvar if isinstance(param.envvar, str) else ", ".join(param.envvar or ())
    env = f"`{envvar}`" if envvar else ""
    default = ""
    if getattr(param, "show_default", None) is not False and param.default not in (None, False, (), []):
        if not callable(param.default):
            default = f"`{param.default}`"
    return names, env, default, _cell(getattr(param, "help", None) or "")


def _options_table(command: Any, ctx: Any) -> list[str]:
    params = [p for p in command.get_params(ctx) if p.param_type_name == "option" and not p.hidden]
    if not params:
        return ["No options."]
    lines = ["| Option | Environment variable | Default | What it does |", "| --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(_option_row(p, ctx)) + " |" for p in params]
    return lines


def _signature(command: Any, ctx: Any) -> tuple[Any, ...]:
    return tuple(_option_row(p, ctx) for p in command.get_params(ctx) if p.param_type_name == "option")


def _anchor(command_path: str) -> str:
    """The id the toc extension gives the heading `` `dbt-prefect build` ``."""
    return "-".join(command_path.lower().split())


def _paragraphs(text: str | None) -> list[str]:
    """typer's help text is markdown (rich_markup_mode="markdown"); lines indented by two
    spaces in an epilog are command examples, and adjacent ones make one block."""
    if not text:
        return []
    out: list[str] = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        if all(line.startswith("  ") for line in lines):
            examples = [line.strip() for line in lines]
            if out[-3:-1] and out[-2] == "```":  # the previous block was examples too
                out[-2:-2] = examples
            else:
                out += ["```text", *examples, "```", ""]
        else:
            out += [" ".join(line.strip() for line in lines), ""]
    return out


def cli_reference(app: Any = None, prog: str = "dbt-prefect") -> str:
    """The markdown of the command-line reference of ``app`` (default: dbt-prefect's own)."""
    import typer.main

    if app is None:
        from dbt_prefect.cli.main import app
    root = typer.main.get_command(app)
    root_ctx = _context(root, prog)
    commands = [(cmd, ctx) for cmd, ctx in walk(root, root_ctx) if cmd is not root]
    runnable = [(cmd, ctx) for cmd, ctx in commands if not _is_group(cmd)]

    lines = [*_paragraphs(root.help), "```text", root.get_usage(root_ctx).strip(), "```", ""]
    lines += ["Options of `" + prog + "` itself:", "", *_options_table(root, root_ctx), ""]
    lines += [*_paragraphs(root.epilog)]

    lines += ["## Commands", "", "| Command | What it does |", "| --- | --- |"]
    for cmd, ctx in runnable:
        lines.append(
            f"| `{ctx.command_path}` | {_cell((cmd.help or '').strip().splitlines()[0] if cmd.help else '')} |"
        )
    lines.append("")

    # A section per command; a table of options only where it differs from an earlier one.
    first_with: dict[tuple[Any, ...], str] = {}
    for cmd, ctx in runnable:
        path = ctx.command_path
        lines += [f"## `{path}`", "", *_paragraphs(cmd.help)]
        lines += ["```text", cmd.get_usage(ctx).strip(), "```", ""]
        signature = _signature(cmd, ctx)
        if signature in first_with:
            earlier = first_with[signature]
            lines += [f"Options: the same as [`{earlier}`](#{_anchor(earlier)}).", ""]
        else:
            first_with[signature] = path
            lines += [*_options_table(cmd, ctx), ""]
        lines += [*_paragraphs(cmd.epilog)]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(cli_reference())
