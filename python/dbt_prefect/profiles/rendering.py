"""Rendering profiles.yml: walk the parsed YAML tree, resolve each placeholder, dump it.

Pure: no file or network access. placeholders.py parses one placeholder; resolve.py reads
the file, talks to Prefect and manages the temporary profile. This module turns a parsed
profiles.yml tree and a resolver into rendered YAML plus the secret environment dbt needs.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal, overload

import yaml

from dbt_prefect.profiles.placeholders import (
    BLOCK_SYNTAX,
    OPENING_RE,
    PLACEHOLDER_RE,
    VARIABLE_SYNTAX,
    KeyPath,
    MalformedPlaceholderError,
    Placeholder,
    PrefectApiUnreachableError,
    Site,
    UnknownBlockError,
    UnknownFieldError,
    UnknownVariableError,
    format_path,
    parse_placeholder,
)
from dbt_prefect.profiles.resolver import (
    BlockDocumentNotFound,
    BlockTypeNotFound,
    CachingResolver,
    PrefectApiError,
    Resolver,
    VariableNotFound,
)

#: dbt scrubs the values of environment variables with this prefix from logs and errors.
SECRET_ENV_PREFIX = "DBT_ENV_SECRET_PREFECT_"

# Where dbt's Jinja would start rendering: `{{`, `{%` or `{#`.
_JINJA_DELIMITERS_RE = re.compile(r"\{[{%#]")


def type_name(value: object) -> str:
    """A YAML value's type for error messages (never the value: it may be a secret)."""
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


class _Renderer:
    """One resolution: each lookup made once, each distinct secret given one env var."""

    def __init__(self, resolver: Resolver, source_path: Path, env_var_names: Iterator[str] | None) -> None:
        self.resolver = CachingResolver(resolver)
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

    def lookup(self, ph: Placeholder, site: Site) -> object:
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

    def _walk(self, value: object, path: KeyPath, owner: str, ph: Placeholder, site: Site) -> object:
        done: list[str | int] = []

        def here() -> str:
            return f"{owner} field '{format_path(done)}'" if done else owner

        for part in path:
            if isinstance(value, Mapping):
                key: str | int = part
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
                    f"{here()} is a {type_name(value)} and has no field '{part}'",
                    f"end the placeholder at '{format_path(done) or ph.name}'",
                )
            done.append(part)
        return value

    # -- conversion ----------------------------------------------------------------

    def native(self, value: object, secret: bool) -> object:
        """A value for a whole-YAML-value placeholder (mappings and lists kept)."""
        if isinstance(value, str):
            return self.secret_ref(value) if secret else _safe_text(value)
        if isinstance(value, Mapping):
            return {str(k): self.native(v, secret) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.native(v, secret) for v in value]
        return value  # int, float, bool, None: inlined

    @staticmethod
    def as_text(value: object) -> str | None:
        if isinstance(value, str):
            return value
        if value is None:
            return None
        return json.dumps(value, separators=(",", ":"), sort_keys=False)

    # A rendered key is always text; a whole-value placeholder keeps its native type.
    @overload
    def render_string(self, text: str, site: Site, *, is_key: Literal[True]) -> str: ...
    @overload
    def render_string(self, text: str, site: Site, *, is_key: Literal[False] = ...) -> object: ...

    def render_string(self, text: str, site: Site, *, is_key: bool = False) -> object:
        opening = OPENING_RE.search(text)
        if opening is None:
            return text
        matches = list(PLACEHOLDER_RE.finditer(text))
        if not matches:
            raw = text[opening.start() :]
            raise site.error(
                MalformedPlaceholderError,
                raw.strip(),
                "malformed placeholder: it has no closing '}}'",
                f"close it: {BLOCK_SYNTAX} or {VARIABLE_SYNTAX}",
            )
        placeholders = [parse_placeholder(m.group(0), m.group(1), site) for m in matches]

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
        for m, ph in zip(matches, placeholders, strict=True):
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
        opening = OPENING_RE.search(leftover)
        if opening is not None:
            raw = leftover[opening.start() :]
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

    def render_tree(self, node: object, keypath: KeyPath = ()) -> object:
        site = Site(self.source_path, format_path(keypath))
        if isinstance(node, dict):
            out: dict[object, object] = {}
            for key, value in node.items():
                new_key = self.render_string(key, site, is_key=True) if isinstance(key, str) else key
                out[new_key] = self.render_tree(value, keypath + (new_key,))
            return out
        if isinstance(node, list):
            return [self.render_tree(item, keypath + (i,)) for i, item in enumerate(node)]
        if isinstance(node, str):
            return self.render_string(node, site)
        return node


class _NoAliasDumper(yaml.SafeDumper):
    """Writes a value used twice (one cached block, two placeholders) in full each time:
    the rendered file stays plain YAML, without `&id001` anchors."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _dump(tree: object, source_path: Path) -> str:
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


def render_tree(
    tree: object, source_path: Path, resolver: Resolver, env_var_names: Iterator[str] | None
) -> tuple[str, dict[str, str]]:
    """Render a parsed profiles.yml: the YAML text to write and the secret environment."""
    renderer = _Renderer(resolver, source_path, env_var_names)
    rendered = renderer.render_tree(tree)
    return _dump(rendered, source_path), dict(renderer.secret_env)
