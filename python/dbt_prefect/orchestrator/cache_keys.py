"""The cache key of each dbt node: what it is built from, code and data.

A key is the hash of the node's parts: its file (dbt's checksum of the SQL or the seed's
CSV), its config, its columns, its relation, the macros it uses (their SQL, and the
macros those use), the build's ``--vars``, and one part per input: an upstream node's
own key (so a change cascades downstream) or a source's data version (so new rows in a
source reach every node that reads it). Not the compiled SQL: a change that only comes
through an environment variable does not change a key, as in the official orchestrator.

A source whose version could not be read is a constant part: the nodes that read it are
keyed by code and config only, as in the official orchestrator (cache.py warns about it).
A parent the manifest does not have makes the node's key None, and the keys of everything
downstream of it: nothing says it is unchanged. Everything here is pure: the manifest and
the source versions in, keys out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Parts of the key that are not inputs, in the order a miss reason names them.
OWN_PARTS = ("code", "config", "columns", "relation", "macros", "vars")
INPUT_PREFIX = "input:"
# The version part of a source whose data version could not be read.
UNVERSIONED = "unversioned"


@dataclass(frozen=True)
class NodeKey:
    """A node's key and the hashes of its parts (kept in the store, to say what changed)."""

    key: str | None
    parts: Mapping[str, str | None]
    # The input whose version is unknown, when key is None.
    unknown_input: str | None = None


def _digest(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class KeyBuilder:
    """Computes keys on demand over the manifest, each node once (ancestors first)."""

    def __init__(
        self,
        manifest: Any,
        project_dir: Path,
        source_versions: Mapping[str, str | None],
        vars_text: str | None,
    ) -> None:
        self.manifest = manifest
        self.project_dir = project_dir
        self.source_versions = source_versions
        self.vars_hash = _digest(vars_text or "")
        self._keys: dict[str, NodeKey] = {}
        self._macro_hashes: dict[str, str] = {}

    def key(self, unique_id: str) -> NodeKey:
        known = self._keys.get(unique_id)
        if known is not None:
            return known
        # Iterative, parents first: a deep DAG must not hit Python's recursion limit.
        pending = [unique_id]
        while pending:
            current = pending[-1]
            if current in self._keys:
                pending.pop()
                continue
            missing = [p for p in self._node_parents(current) if p not in self._keys and p in self.manifest.nodes]
            if missing:
                pending.extend(missing)
                continue
            self._keys[current] = self._compute(current)
            pending.pop()
        return self._keys[unique_id]

    def _node_parents(self, unique_id: str) -> list[str]:
        entry = self.manifest.nodes.get(unique_id) or self.manifest.unit_tests.get(unique_id)
        depends_on = getattr(entry, "depends_on", None)
        return list(getattr(depends_on, "nodes", None) or ())

    def _compute(self, unique_id: str) -> NodeKey:
        entry = self.manifest.nodes.get(unique_id) or self.manifest.unit_tests.get(unique_id)
        if entry is None:
            return NodeKey(None, {}, unknown_input=unique_id)
        parts: dict[str, str | None] = {
            "code": self._code_hash(entry),
            "config": _digest(_plain(getattr(entry, "config", None))),
            "columns": _digest(
                {
                    name: (getattr(c, "data_type", None), _plain(getattr(c, "constraints", None)))
                    for name, c in (getattr(entry, "columns", None) or {}).items()
                }
            ),
            "relation": _digest(getattr(entry, "relation_name", None) or ""),
            "macros": self._macros_hash(entry),
            "vars": self.vars_hash,
        }
        unknown: str | None = None
        for parent in sorted(self._node_parents(unique_id)):
            if parent in self.manifest.sources:
                # A source whose version could not be read counts by its code only, as in prefect-dbt.
                version = self.source_versions.get(parent)
                parts[INPUT_PREFIX + parent] = _digest(UNVERSIONED if version is None else version)
            elif parent in self._keys:
                parts[INPUT_PREFIX + parent] = self._keys[parent].key
            else:  # a node the manifest does not have (a disabled one): nothing says it is unchanged
                parts[INPUT_PREFIX + parent] = None
            if parts[INPUT_PREFIX + parent] is None and unknown is None:
                unknown = parent
        if unknown is not None:
            return NodeKey(None, parts, unknown_input=unknown)
        return NodeKey(_digest([unique_id, sorted(parts.items())]), parts)

    def _code_hash(self, entry: Any) -> str:
        checksum = getattr(entry, "checksum", None)
        name, value = getattr(checksum, "name", None), getattr(checksum, "checksum", None)
        if name == "path":
            # dbt checksums a seed over 1 MiB by its path only: read the file itself.
            root = Path(getattr(entry, "root_path", None) or self.project_dir)
            try:
                return _digest(hashlib.sha256((root / entry.original_file_path).read_bytes()).hexdigest())
            except OSError:
                return _digest(f"unreadable:{entry.original_file_path}")
        if value and name == "sha256" and getattr(entry, "resource_type", None) != "test":
            return _digest(value)
        # Tests (a generic test's file is the YAML that declares many) and unit tests: their own SQL and arguments.
        return _digest(
            [
                getattr(entry, "raw_code", ""),
                _plain(getattr(entry, "test_metadata", None)),
                _plain(getattr(entry, "given", None)),
                _plain(getattr(entry, "expect", None)),
            ]
        )

    def _macros_hash(self, entry: Any) -> str:
        depends_on = getattr(entry, "depends_on", None)
        macros = sorted(getattr(depends_on, "macros", None) or ())
        return _digest([self._macro_hash(m) for m in macros])

    def _macro_hash(self, macro_id: str) -> str:
        known = self._macro_hashes.get(macro_id)
        if known is not None:
            return known
        # The macro's SQL and, transitively, the macros it calls; a cycle hashes what it has seen.
        seen: list[str] = []
        pending = [macro_id]
        texts: list[str] = []
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.append(current)
            macro = self.manifest.macros.get(current)
            if macro is None:
                texts.append(f"missing:{current}")
                continue
            texts.append(f"{current}\0{macro.macro_sql}")
            pending.extend(sorted(getattr(macro.depends_on, "macros", None) or ()))
        self._macro_hashes[macro_id] = _digest(sorted(texts))
        return self._macro_hashes[macro_id]


def _plain(value: Any) -> Any:
    """A JSON-able form of a dbt config or metadata object."""
    if hasattr(value, "to_dict"):
        try:
            return value.to_dict(omit_none=True)
        except TypeError:
            return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def changed_parts(current: NodeKey, stored_parts: Mapping[str, str | None]) -> list[str]:
    """The parts of a key that differ from the stored ones, own parts first."""
    names = [*OWN_PARTS, *sorted(n for n in {*current.parts, *stored_parts} if n.startswith(INPUT_PREFIX))]
    return [n for n in names if current.parts.get(n) != stored_parts.get(n)]
