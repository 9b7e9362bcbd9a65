"""The placeholder syntax: finding `{{ prefect.* }}` expressions, parsing one, its errors.

Pure: no file or network access. rendering.py resolves what this module parses.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from dbt_prefect.errors import ProfileTemplateError

BLOCK_SYNTAX = "{{ prefect.blocks.<block-type-slug>.<block-document-name>[.<field>...] }}"
VARIABLE_SYNTAX = "{{ prefect.variables.<name> }}"

# Mapping keys and list indexes, e.g. ("outputs", "dev", "keyfile") or ("schemas", 0).
KeyPath: TypeAlias = tuple[str | int, ...]

# Any `{{ prefect... }}` expression, up to the first `}}`. Jinja whitespace control is allowed.
PLACEHOLDER_RE = re.compile(r"\{\{-?\s*(prefect\b.*?)\s*-?\}\}")
OPENING_RE = re.compile(r"\{\{-?\s*prefect\b")
_SLUG_RE = re.compile(r"[a-z0-9-]+")
_VARIABLE_NAME_RE = re.compile(r"[a-z0-9_-]+")
# One accessor after `prefect`: `.name`, `[3]`, `['key']` or `["key"]`.
_ACCESSOR_RE = re.compile(
    r"""\.(?P<name>[A-Za-z0-9_-]+)"""
    r"""|\[\s*(?:(?P<index>-?\d+)|'(?P<sq>[^']*)'|"(?P<dq>[^"]*)")\s*\]"""
)


class _PlaceholderError(ProfileTemplateError):
    """A placeholder could not be resolved; carries where it is."""

    def __init__(self, message: str, *, placeholder: str, profiles_path: Path, keypath: str) -> None:
        super().__init__(message)
        self.placeholder = placeholder
        self.profiles_path = profiles_path
        self.keypath = keypath


class MalformedPlaceholderError(_PlaceholderError):
    """The placeholder does not follow the `{{ prefect.* }}` syntax."""


class UnknownBlockError(_PlaceholderError):
    """No block type with that slug, or no block document with that name."""


class UnknownFieldError(_PlaceholderError):
    """The field path does not exist in the block or variable value."""


class UnknownVariableError(_PlaceholderError):
    """No Prefect variable with that name."""


class PrefectApiUnreachableError(_PlaceholderError):
    """The Prefect API could not be reached (or refused the request)."""


# --------------------------------------------------------------------------------------
# Finding placeholders
# --------------------------------------------------------------------------------------


def has_prefect_placeholders(text: str) -> bool:
    """True if `text` contains a `{{ prefect...` expression (cheap; no YAML parsing)."""
    return OPENING_RE.search(text) is not None


def tree_has_placeholders(node: object) -> bool:
    """True if a key or string value of the parsed YAML holds a placeholder (not a comment)."""
    if isinstance(node, dict):
        return any((isinstance(k, str) and OPENING_RE.search(k)) or tree_has_placeholders(v) for k, v in node.items())
    if isinstance(node, list):
        return any(tree_has_placeholders(item) for item in node)
    return isinstance(node, str) and OPENING_RE.search(node) is not None


# --------------------------------------------------------------------------------------
# Parsing one placeholder
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placeholder:
    raw: str  # as written, e.g. "{{ prefect.variables.target }}"
    kind: str  # "blocks" or "variables"
    type_slug: str | None
    name: str
    path: KeyPath


@dataclass(frozen=True)
class Site:
    """Where a placeholder is: for error messages."""

    source_path: Path
    keypath: str

    def error(self, cls: type[_PlaceholderError], raw: str, problem: str, fix: str) -> _PlaceholderError:
        where = f" (at {self.keypath})" if self.keypath else ""
        return cls(
            f"{raw} in {self.source_path}{where}: {problem}. Fix: {fix}.",
            placeholder=raw,
            profiles_path=self.source_path,
            keypath=self.keypath,
        )


def format_path(path: Iterable[str | int]) -> str:
    """`a.b[0]["odd key"]`: a key path as the user would write it."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def parse_placeholder(raw: str, expr: str, site: Site) -> Placeholder:
    """Parse `expr` (the inside of `raw`, starting at `prefect`); malformed ones raise."""

    def malformed(problem: str, fix: str | None = None) -> _PlaceholderError:
        return site.error(
            MalformedPlaceholderError,
            raw,
            f"malformed placeholder: {problem}",
            fix or f"write {BLOCK_SYNTAX} or {VARIABLE_SYNTAX}",
        )

    rest = expr[len("prefect") :]
    accessors: list[tuple[str, str | int]] = []  # ("name", ...) / ("index", ...) / ("key", ...)
    pos = 0
    while pos < len(rest):
        m = _ACCESSOR_RE.match(rest, pos)
        if m is None:
            leftover = rest[pos:].strip()
            raise malformed(
                f"unexpected {leftover!r}; placeholders take only a dotted path with "
                f"optional [index] parts (no filters, calls or expressions)"
            )
        if m.group("name") is not None:
            accessors.append(("name", m.group("name")))
        elif m.group("index") is not None:
            accessors.append(("index", int(m.group("index"))))
        else:
            key = m.group("sq") if m.group("sq") is not None else m.group("dq")
            accessors.append(("key", key))
        pos = m.end()

    if not accessors or accessors[0][0] != "name":
        raise malformed("'prefect' must be followed by '.blocks.' or '.variables.'")
    namespace = str(accessors[0][1])
    if namespace not in ("blocks", "variables"):
        close = difflib.get_close_matches(namespace, ["blocks", "variables"], n=1)
        suggestion = f" (did you mean '{close[0]}'?)" if close else ""
        raise malformed(f"'prefect.{namespace}' is neither 'prefect.blocks' nor 'prefect.variables'{suggestion}")

    if namespace == "variables":
        if len(accessors) < 2 or accessors[1][0] != "name":
            raise malformed("it names no variable", f"write {VARIABLE_SYNTAX}")
        name = str(accessors[1][1])
        if not _VARIABLE_NAME_RE.fullmatch(name):
            raise malformed(
                f"{name!r} is not a valid Prefect variable name (lowercase letters, "
                f"numbers, dashes and underscores only)",
                f"use the variable's exact name, e.g. {VARIABLE_SYNTAX}",
            )
        return Placeholder(raw, "variables", None, name, tuple(a[1] for a in accessors[2:]))

    if len(accessors) < 2 or accessors[1][0] != "name":
        raise malformed("it names no block type", f"write {BLOCK_SYNTAX}")
    type_slug = str(accessors[1][1])
    if len(accessors) < 3 or accessors[2][0] != "name":
        raise malformed(
            f"it names the block type '{type_slug}' but no block document",
            f"write {{{{ prefect.blocks.{type_slug}.<block-document-name> }}}}",
        )
    name = str(accessors[2][1])
    for label, value in (("block type slug", type_slug), ("block document name", name)):
        if not _SLUG_RE.fullmatch(value):
            raise malformed(
                f"{value!r} is not a valid {label} (lowercase letters, numbers and dashes only)",
                f"use the exact {label}, e.g. {{{{ prefect.blocks.secret.my-secret }}}}",
            )
    return Placeholder(raw, "blocks", type_slug, name, tuple(a[1] for a in accessors[3:]))
