"""What profiles.yml templating asks of Prefect: the resolver contract and its errors.

rendering.py renders placeholders through any ``Resolver``; resolve.py provides the one
that reads Prefect blocks and variables. The errors say what was not found, so the
renderer can name it and suggest what exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol


class Resolver(Protocol):
    """Reads Prefect objects for `render_profiles_text`.

    `block` returns the block document's data (secrets included); `variable` returns the
    variable's value (any JSON-like value: the renderer checks each type it meets). Raise
    `BlockTypeNotFound`, `BlockDocumentNotFound` or `VariableNotFound` (a plain `KeyError`
    also works) when something does not exist, and `PrefectApiError` when the API cannot
    answer.
    """

    def block(self, type_slug: str, name: str) -> Mapping[str, object]: ...

    def variable(self, name: str) -> object: ...


class BlockTypeNotFound(LookupError):
    """Raised by a resolver: no block type has this slug."""

    def __init__(self, type_slug: str, where: str | None = None) -> None:
        super().__init__(type_slug)
        self.type_slug = type_slug
        self.where = where


class BlockDocumentNotFound(LookupError):
    """Raised by a resolver: the block type exists but has no document with this name."""

    def __init__(
        self,
        type_slug: str,
        name: str,
        available: Iterable[str] | None = None,
        where: str | None = None,
    ) -> None:
        super().__init__(f"{type_slug}/{name}")
        self.type_slug = type_slug
        self.name = name
        self.available = list(available) if available is not None else None
        self.where = where


class VariableNotFound(LookupError):
    """Raised by a resolver: no variable has this name."""

    def __init__(self, name: str, where: str | None = None) -> None:
        super().__init__(name)
        self.name = name
        self.where = where


class PrefectApiError(Exception):
    """Raised by a resolver: the Prefect API could not answer (message has no secrets)."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class CachingResolver:
    """Reads each block and variable once per resolution; a plain `KeyError` from the
    wrapped resolver becomes the matching not-found error."""

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        self._blocks: dict[tuple[str, str], Mapping[str, object]] = {}
        self._variables: dict[str, object] = {}

    def block(self, type_slug: str, name: str) -> Mapping[str, object]:
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

    def variable(self, name: str) -> object:
        if name not in self._variables:
            try:
                value = self._resolver.variable(name)
            except (VariableNotFound, PrefectApiError):
                raise
            except KeyError:
                raise VariableNotFound(name) from None
            self._variables[name] = value
        return self._variables[name]
