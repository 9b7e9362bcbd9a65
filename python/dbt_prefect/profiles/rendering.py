"""Placeholder parsing and rendering for profiles.yml: pure, no file or network access.

profiles.py reads the file, talks to Prefect and manages the temporary profile; this
module turns a parsed profiles.yml tree and a resolver into rendered YAML plus the
secret environment dbt needs.
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dbt_prefect.errors import ProfileTemplateError
from dbt_prefect.profiles.resolver import (
    BlockDocumentNotFound,
    BlockTypeNotFound,
    PrefectApiError,
    VariableNotFound,
)

#: dbt scrubs the values of environment variables with this prefix from logs and errors.
SECRET_ENV_PREFIX = "DBT_ENV_SECRET_PREFECT_"

BLOCK_SYNTAX = "{{ prefect.blocks.<block-type-slug>.<block-document-name>[.<field>...] }}"
VARIABLE_SYNTAX = "{{ prefect.variables.<name> }}"

# Any `{{ prefect... }}` expression, up to the first `}}`. Jinja whitespace control is allowed.
_PLACEHOLDER_RE = re.compile(r"\{\{-?\s*(prefect\b.*?)\s*-?\}\}")
_OPENING_RE = re.compile(r"\{\{-?\s*prefect\b")
_JINJA_DELIMITERS_RE = re.compile(r"\{[{%#]")
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
# profiles.yml loading
# --------------------------------------------------------------------------------------


def has_prefect_placeholders(text: str) -> bool:
    """True if `text` contains a `{{ prefect...` expression (cheap; no YAML parsing)."""
    return _OPENING_RE.search(text) is not None


# --------------------------------------------------------------------------------------
# Placeholder parsing
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Placeholder:
    raw: str  # as written, e.g. "{{ prefect.variables.target }}"
    kind: str  # "blocks" or "variables"
    type_slug: str | None
    name: str
    path: tuple[str | int, ...]


@dataclass(frozen=True)
class _Site:
    """Where a placeholder is: for error messages."""

    source_path: Path
    keypath: str

    def error(self, cls: type[_PlaceholderError], raw: str, problem: str, fix: str):
        where = f" (at {self.keypath})" if self.keypath else ""
        return cls(
            f"{raw} in {self.source_path}{where}: {problem}. Fix: {fix}.",
            placeholder=raw,
            profiles_path=self.source_path,
            keypath=self.keypath,
        )


def _format_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _parse_placeholder(raw: str, expr: str, site: _Site) -> _Placeholder:
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
        return _Placeholder(raw, "variables", None, name, tuple(a[1] for a in accessors[2:]))

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
    return _Placeholder(raw, "blocks", type_slug, name, tuple(a[1] for a in accessors[3:]))


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def _jinja_string_literal(value: str) -> str:
    """A Jinja expression that renders to exactly `value` (Jinja unescapes unicode-escape)."""
    escaped = value.encode("unicode_escape").decode("ascii").replace("'", "\\'")
    return "{{ '" + escaped + "' }}"


def _safe_text(value: str) -> str:
    """Inline a non-secret string so that dbt's Jinja renders it back unchanged."""
    if _JINJA_DELIMITERS_RE.search(value):
        return _jinja_string_literal(value)
    return value


def _env_ref(name: str) -> str:
    return "{{ env_var('" + name + "') }}"


class _CachingResolver:
    """Reads each block and variable once per resolution."""

    def __init__(self, resolver: Any) -> None:
        self._resolver = resolver
        self._blocks: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._variables: dict[str, Any] = {}

    def block(self, type_slug: str, name: str) -> Mapping[str, Any]:
        key = (type_slug, name)
        if key not in self._blocks:
            try:
                data = self._resolver.block(type_slug, name)
            except (BlockTypeNotFound, BlockDocumentNotFound, PrefectApiError):
                raise
            except KeyError:
                raise BlockDocumentNotFound(type_slug, name) from None
            self._blocks[key] = data if data is not None else {}
        return self._blocks[key]

    def variable(self, name: str) -> Any:
        if name not in self._variables:
            try:
                value = self._resolver.variable(name)
            except (VariableNotFound, PrefectApiError):
                raise
            except KeyError:
                raise VariableNotFound(name) from None
            self._variables[name] = value
        return self._variables[name]


class _Renderer:
    def __init__(self, resolver: Any, source_path: Path, env_var_names: Iterator[str] | None) -> None:
        self.resolver = _CachingResolver(resolver)
        self.source_path = source_path
        self.names = env_var_names or (f"{SECRET_ENV_PREFIX}{n}" for n in itertools.count(1))
        self.secret_env: dict[str, str] = {}
        self._by_value: dict[str, str] = {}

    # -- secrets -------------------------------------------------------------------

    def secret_ref(self, value: str) -> str:
        name = self._by_value.get(value)
        if name is None:
            name = next(self.names)
            self._by_value[value] = name
            self.secret_env[name] = value
        return _env_ref(name)

    # -- lookups -------------------------------------------------------------------

    def lookup(self, ph: _Placeholder, site: _Site) -> Any:
        try:
            if ph.kind == "variables":
                root = self.resolver.variable(ph.name)
                owner = f"variable '{ph.name}'"
                path = ph.path
            else:
                assert ph.type_slug is not None
                data = self.resolver.block(ph.type_slug, ph.name)
                owner = f"block '{ph.type_slug}/{ph.name}'"
                path = ph.path
                root = data
                # Blocks whose only field is `value` (secret, json, string): the block
                # stands for its value; an explicit `.value` is accepted too.
                if isinstance(data, Mapping) and list(data.keys()) == ["value"]:
                    root = data["value"]
                    if path and path[0] == "value":
                        path = path[1:]
        except PrefectApiError as exc:
            raise site.error(
                PrefectApiUnreachableError,
                ph.raw,
                str(exc),
                "start the Prefect server (`prefect server start`) or set PREFECT_API_URL "
                "to a reachable Prefect API (with PREFECT_API_KEY for Prefect Cloud)",
            ) from None
        except BlockTypeNotFound as exc:
            where = f" on {exc.where}" if exc.where else ""
            raise site.error(
                UnknownBlockError,
                ph.raw,
                f"no block type with slug '{ph.type_slug}' is registered{where}",
                "use the block type's slug, lowercase with dashes (e.g. 'secret' or "
                "'snowflake-credentials'; `prefect block type ls` lists them), or register "
                "the block type (`prefect block register -m <module>`)",
            ) from None
        except BlockDocumentNotFound as exc:
            where = f" on {exc.where}" if exc.where else ""
            existing = ""
            if exc.available is not None:
                shown = ", ".join(exc.available[:20]) if exc.available else "none"
                if len(exc.available) > 20:
                    shown += f", ... ({len(exc.available)} in all)"
                existing = f" (existing '{ph.type_slug}' blocks: {shown})"
            raise site.error(
                UnknownBlockError,
                ph.raw,
                f"no '{ph.type_slug}' block named '{ph.name}' exists{where}{existing}",
                f'create it (in the Prefect UI, or `<BlockClass>(...).save("{ph.name}")` '
                f"in Python) or correct the block name in profiles.yml",
            ) from None
        except VariableNotFound as exc:
            where = f" on {exc.where}" if exc.where else ""
            raise site.error(
                UnknownVariableError,
                ph.raw,
                f"no Prefect variable named '{ph.name}' exists{where}",
                f"create it (`prefect variable set {ph.name} <value>`, or "
                f'Variable.set("{ph.name}", ...) in Python) or correct the name in '
                f"profiles.yml",
            ) from None
        return self._walk(root, path, owner, ph, site)

    def _walk(self, value: Any, path: tuple[str | int, ...], owner: str, ph: _Placeholder, site: _Site) -> Any:
        done: list[str | int] = []

        def here() -> str:
            return f"{owner} field '{_format_path(done)}'" if done else owner

        for part in path:
            if isinstance(value, Mapping):
                key: Any = part
                if key not in value and isinstance(part, int) and str(part) in value:
                    key = str(part)
                if key not in value:
                    fields = ", ".join(str(k) for k in value.keys()) or "none"
                    raise site.error(
                        UnknownFieldError,
                        ph.raw,
                        f"{here()} has no field '{part}'. Available fields: {fields}",
                        "use one of the available fields in the placeholder",
                    )
                value = value[key]
            elif isinstance(value, (list, tuple)):
                index: int | None = part if isinstance(part, int) else None
                if index is None and isinstance(part, str) and re.fullmatch(r"-?\d+", part):
                    index = int(part)
                if index is None:
                    raise site.error(
                        UnknownFieldError,
                        ph.raw,
                        f"{here()} is a list and has no field '{part}'",
                        f"address its items by position, e.g. [{0}]",
                    )
                if not -len(value) <= index < len(value):
                    raise site.error(
                        UnknownFieldError,
                        ph.raw,
                        f"{here()} is a list of {len(value)} items, so [{index}] is out of range",
                        f"use an index from 0 to {len(value) - 1}"
                        if value
                        else "put items in the list, or remove the index",
                    )
                value = value[index]
            else:
                # Name the type only: the value may be a secret.
                raise site.error(
                    UnknownFieldError,
                    ph.raw,
                    f"{here()} is a {_type_name(value)} and has no field '{part}'",
                    f"end the placeholder at '{_format_path(done) or ph.name}'",
                )
            done.append(part)
        return value

    # -- conversion ----------------------------------------------------------------

    def native(self, value: Any, secret: bool) -> Any:
        """A value for a whole-YAML-value placeholder (mappings and lists kept)."""
        if isinstance(value, str):
            return self.secret_ref(value) if secret else _safe_text(value)
        if isinstance(value, Mapping):
            return {str(k): self.native(v, secret) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.native(v, secret) for v in value]
        return value  # int, float, bool, None: inlined

    @staticmethod
    def as_text(value: Any) -> str | None:
        if isinstance(value, str):
            return value
        if value is None:
            return None
        return json.dumps(value, separators=(",", ":"), sort_keys=False)

    def render_string(self, text: str, site: _Site, *, is_key: bool = False) -> Any:
        if not _OPENING_RE.search(text):
            return text
        matches = list(_PLACEHOLDER_RE.finditer(text))
        if not matches:
            raw = text[_OPENING_RE.search(text).start() :]  # type: ignore[union-attr]
            raise site.error(
                MalformedPlaceholderError,
                raw.strip(),
                "malformed placeholder: it has no closing '}}'",
                f"close it: {BLOCK_SYNTAX} or {VARIABLE_SYNTAX}",
            )
        placeholders = [_parse_placeholder(m.group(0), m.group(1), site) for m in matches]

        if is_key:
            for ph in placeholders:
                if ph.kind == "blocks":
                    raise site.error(
                        MalformedPlaceholderError,
                        ph.raw,
                        "block placeholders cannot be used in mapping keys (keys are "
                        "written to disk as-is, and block values are secret)",
                        "move the placeholder to a value, or use a Prefect variable",
                    )

        # Whole value: insert the native value.
        if not is_key and len(matches) == 1 and matches[0].group(0) == text.strip():
            ph = placeholders[0]
            return self.native(self.lookup(ph, site), secret=ph.kind == "blocks")

        # Part of a longer string: insert as text. Segments are (text, kind) where kind is
        # "source" (user's text, may hold dbt Jinja), "plain" (variable text) or "secret".
        segments: list[tuple[str, str]] = []
        last = 0
        for m, ph in zip(matches, placeholders):
            segments.append((text[last : m.start()], "source"))
            value = self.lookup(ph, site)
            as_text = self.as_text(value)
            if as_text is None:
                raise site.error(
                    UnknownFieldError,
                    ph.raw,
                    "it resolves to null, which cannot be inserted into text",
                    "give it a value in Prefect, or make the placeholder the whole YAML value",
                )
            # Block strings (and mappings/lists rendered as JSON text) are secret;
            # numbers and booleans from blocks are inlined.
            secret = ph.kind == "blocks" and isinstance(value, (str, Mapping, list, tuple))
            segments.append((as_text, "secret" if secret else "plain"))
            last = m.end()
        segments.append((text[last:], "source"))
        leftover = "".join(s for s, kind in segments if kind == "source")
        if _OPENING_RE.search(leftover):
            raw = leftover[_OPENING_RE.search(leftover).start() :]  # type: ignore[union-attr]
            raise site.error(
                MalformedPlaceholderError,
                raw.strip(),
                "malformed placeholder: it has no closing '}}'",
                f"close it: {BLOCK_SYNTAX} or {VARIABLE_SYNTAX}",
            )
        if is_key:
            return "".join(s for s, _ in segments)

        secret_positions = [i for i, (_, kind) in enumerate(segments) if kind == "secret"]
        if len(secret_positions) > 1:
            # dbt substitutes only one secret env var per value, so merge the span from the
            # first to the last secret into one secret (plain text between them included).
            first, end = secret_positions[0], secret_positions[-1]
            between = segments[first : end + 1]
            if any(kind == "source" and _JINJA_DELIMITERS_RE.search(s) for s, kind in between):
                raise site.error(
                    MalformedPlaceholderError,
                    placeholders[0].raw,
                    "this value mixes several block placeholders with dbt Jinja between "
                    "them, which dbt cannot render with secrets",
                    "move the dbt Jinja before the first or after the last block placeholder",
                )
            merged = "".join(s for s, _ in between)
            segments[first : end + 1] = [(merged, "secret")]

        out = []
        for s, kind in segments:
            if kind == "source":
                out.append(s)
            elif kind == "plain":
                out.append(_safe_text(s))
            else:
                out.append(self.secret_ref(s))
        return "".join(out)

    def render_tree(self, node: Any, keypath: tuple[str | int, ...] = ()) -> Any:
        site = _Site(self.source_path, _format_path(keypath))
        if isinstance(node, dict):
            out: dict[Any, Any] = {}
            for key, value in node.items():
                new_key = self.render_string(key, site, is_key=True) if isinstance(key, str) else key
                out[new_key] = self.render_tree(value, keypath + (new_key,))
            return out
        if isinstance(node, list):
            return [self.render_tree(item, keypath + (i,)) for i, item in enumerate(node)]
        if isinstance(node, str):
            return self.render_string(node, site)
        return node


def _tree_has_placeholders(node: Any) -> bool:
    if isinstance(node, dict):
        return any((isinstance(k, str) and _OPENING_RE.search(k)) or _tree_has_placeholders(v) for k, v in node.items())
    if isinstance(node, list):
        return any(_tree_has_placeholders(item) for item in node)
    return isinstance(node, str) and _OPENING_RE.search(node) is not None


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(tree: Any, source_path: Path) -> str:
    header = (
        f"# Rendered by dbt-prefect from {source_path}.\n"
        f"# Values from Prefect blocks are {{{{ env_var('{SECRET_ENV_PREFIX}<N>') }}}} "
        f"references, set only while dbt runs.\n"
    )
    body = yaml.dump(
        tree,
        Dumper=_NoAliasDumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=2**31 - 1,
    )
    return header + body


def _render_tree(
    tree: Any, source_path: Path, resolver: Any, env_var_names: Iterator[str] | None
) -> tuple[str, dict[str, str]]:
    renderer = _Renderer(resolver, source_path, env_var_names)
    rendered = renderer.render_tree(tree)
    return _dump(rendered, source_path), dict(renderer.secret_env)
