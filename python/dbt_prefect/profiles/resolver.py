"""What profiles.yml templating asks of Prefect: the resolver contract and its errors.

profile_rendering.py renders placeholders through any ``Resolver``; profiles.py provides
the one that reads Prefect blocks and variables. The errors say what was not found, so the
renderer can name it and suggest what exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol


class Resolver(Protocol):
    """Reads Prefect objects for `render_profiles_text`.

    `block` returns the block document's data (secrets included); `variable` returns the
    variable's value. Raise `BlockTypeNotFound`, `BlockDocumentNotFound` or
    `VariableNotFound` (a plain `KeyError` also works) when something does not exist, and
    `PrefectApiError` when the API cannot answer.
    """

    def block(self, type_slug: str, name: str) -> Mapping[str, Any]: ...

    def variable(self, name: str) -> Any: ...


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
