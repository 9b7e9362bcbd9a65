"""Reference tables read from the code at build time: statuses, settings, the dbt package.

- ``status_table``: every status dbt's ``NodeStatus`` has, plus dbt-prefect's ``cached``,
  as ``dbt_prefect.model.statuses`` classifies it and the Prefect state it becomes.
- ``settings_table``: the fields of ``PrefectDbtSettings`` with their variables. The
  wording of each default is kept here, and a field without one (or one without a
  field) fails the build.
- ``macro_reference`` and ``vars_table``: the dbt package's macros, from the Jinja comment
  that opens each file in dbt_packages_src/macros/ (one macro per file, named after it),
  and the keys of the var ``dbt_prefect`` from ``prefect_settings_defaults``.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MACROS = ROOT / "dbt_packages_src" / "macros"


class ReferenceError(Exception):
    """The code and what the reference says about it no longer match."""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


# -- statuses ---------------------------------------------------------------------------
def status_table() -> str:
    from dbt.artifacts.schemas.results import NodeStatus

    from dbt_prefect.model.statuses import CACHED, classify, prefect_state

    statuses = [status.value for status in NodeStatus] + [CACHED]
    lines = [
        "| dbt status | Outcome | Prefect state (type) | `Done.` bucket | dbt prints | Asset check | Failure summary says |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for status in statuses:
        info = classify(status)
        state = prefect_state(status, None, 0.0)
        verb = f"`… {info.failure_verb} with message …`" if info.failure_verb else ""
        check = f"`{info.check}`" if info.check else ""
        lines.append(
            f"| `{status}` | {info.outcome.value} | `{state.name}` ({state.type.value}) | `{info.bucket}` "
            f"| `{info.label}` | {check} | {verb} |"
        )
    return "\n".join(lines) + "\n"


# -- settings ---------------------------------------------------------------------------
# What each default of PrefectDbtSettings is, in words (the defaults are computed).
SETTING_DEFAULTS = {
    "project_dir": "the working directory",
    "profiles_dir": "the working directory if it has a `profiles.yml`, else `~/.dbt`",
    "target_path": "dbt's (`target`, or `target-path` in `dbt_project.yml`)",
    "log_level": "Prefect's logging level (`PREFECT_LOGGING_LEVEL`), as a dbt level",
}


def settings_table() -> str:
    from dbt_prefect.settings import PrefectDbtSettings

    prefix = PrefectDbtSettings.model_config.get("env_prefix", "")
    fields = PrefectDbtSettings.model_fields
    missing = sorted(set(fields) - set(SETTING_DEFAULTS))
    stale = sorted(set(SETTING_DEFAULTS) - set(fields))
    if missing or stale:
        raise ReferenceError(
            f"PrefectDbtSettings and docs/hooks/reference_code.py SETTING_DEFAULTS differ: "
            f"fields without a documented default {missing}, documented defaults of no field {stale}"
        )
    lines = ["| Setting | Environment variable | Type | Default |", "| --- | --- | --- | --- |"]
    for name, field in fields.items():
        annotation = getattr(field.annotation, "__name__", str(field.annotation))
        lines.append(f"| `{name}` | `{prefix}{name.upper()}` | `{annotation}` | {SETTING_DEFAULTS[name]} |")
    return "\n".join(lines) + "\n"


# -- the dbt package ----------------------------------------------------------------------
_MACRO = re.compile(r"\{%-?\s*macro\s+(\w+)\s*\(([^)]*)\)\s*-?%\}")
_COMMENT = re.compile(r"\{#-?(.*?)-?#\}", re.S)


def _comment_markdown(raw: str) -> str:
    """A macro's opening comment as markdown: its paragraph, and its ``- item`` lines as a list."""
    blocks: list[list[str]] = []
    for line in (line.strip() for line in raw.strip().splitlines()):
        if line.startswith("- "):
            blocks.append([line])
        elif blocks and line:
            blocks[-1].append(line)
        else:
            blocks.append([line] if line else [])
    out: list[str] = []
    for words in blocks:
        if not words:
            continue
        text = " ".join(words)
        if text.startswith("- ") and out and not out[-1].startswith("- "):
            out.append("")
        out.append(text)
    return "\n".join(out)


def macros() -> list[tuple[str, str, str, list[str], str]]:
    """(folder, name, arguments, adapter implementations, what its opening comment says)
    for each macro file, by folder, then name."""
    found = []
    for path in sorted(MACROS.rglob("*.sql")):
        text = path.read_text(encoding="utf-8")
        defined = _MACRO.findall(text)
        if not defined:
            raise ReferenceError(f"{path.relative_to(ROOT)} defines no macro")
        name, arguments = defined[0]
        if name != path.stem:
            raise ReferenceError(f"{path.relative_to(ROOT)}: its first macro is {name}, not {path.stem}")
        comment = _COMMENT.match(text.lstrip())
        if comment is None:
            raise ReferenceError(f"{path.relative_to(ROOT)} does not open with a comment saying what {name} does")
        doc = _comment_markdown(comment.group(1))
        implementations = [other for other, _ in defined[1:] if other.endswith(f"__{name}")]
        folder = path.parent.relative_to(MACROS).as_posix()
        found.append((folder, name, " ".join(arguments.split()), implementations, doc))
    return found


def macro_reference() -> str:
    lines: list[str] = []
    folder_seen = None
    for folder, name, arguments, implementations, doc in macros():
        if folder != folder_seen:
            lines += [f"### `{folder}/`", ""]
            folder_seen = folder
        lines += [f"#### `{name}`", "", "```jinja", f"{{{{ dbt_prefect.{name}({arguments}) }}}}", "```", ""]
        lines += [doc, ""]
        if implementations:
            lines += ["Implementations: " + ", ".join(f"`{impl}`" for impl in implementations) + ".", ""]
    return "\n".join(lines)


_DEFAULT_ENTRY = re.compile(r"'(\w+)':\s*([^,\n]+),")


def vars_table() -> str:
    """The keys of the var ``dbt_prefect`` with their defaults, from prefect_settings_defaults,
    and what each does, from that macro's comment."""
    path = MACROS / "config" / "prefect_settings_defaults.sql"
    text = path.read_text(encoding="utf-8")
    comment = _COMMENT.match(text.lstrip())
    body = text[text.index("{% macro") :]
    defaults = dict(_DEFAULT_ENTRY.findall(body))
    if not defaults or comment is None:
        raise ReferenceError(f"cannot read the defaults of the var dbt_prefect from {path.relative_to(ROOT)}")
    # "- row_counts, columns: text" bullets of the comment.
    said: dict[str, str] = {}
    for bullet in re.split(r"\n\s*- ", "\n" + comment.group(1)):
        head, _, text_ = bullet.partition(":")
        for key in (k.strip() for k in head.split(",")):
            if key in defaults:
                said[key] = " ".join(text_.split())
    undocumented = sorted(set(defaults) - set(said))
    if undocumented:
        raise ReferenceError(f"{path.relative_to(ROOT)}: its comment does not say what {undocumented} do")
    lines = ["| Key | Default | What it does |", "| --- | --- | --- |"]
    lines += [f"| `{key}` | `{value.strip()}` | {_cell(said[key])} |" for key, value in defaults.items()]
    return "\n".join(lines) + "\n"
