"""Warehouse facts the dbt package collects, on their way to a node's asset event.

The post-hook ``dbt_prefect.collect_metadata()`` runs inside a node's execution and logs
one ``dbt_prefect.record.metadata {json}`` line: the relation's row count and its columns,
read from the warehouse. dbt logs it before it reports the node finished, so the recorder
holds the record when it emits the node's materialization event, and the facts land on
that event. Column descriptions are added here, from the manifest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class MalformedRecord(ValueError):
    """A dbt_prefect.record line that cannot be read; it is logged and ignored."""


@dataclass(frozen=True)
class WarehouseMetadata:
    """What collect_metadata read for one relation; None where it was not collected."""

    unique_id: str
    row_count: int | None = None
    columns: tuple[tuple[str, str], ...] | None = None  # (name, data_type), in order


def parse_metadata_record(text: str) -> WarehouseMetadata:
    """The record in ``text``, the JSON after the marker; raises MalformedRecord."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MalformedRecord(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("unique_id"), str) or not data["unique_id"]:
        raise MalformedRecord("expected an object with a unique_id")
    row_count = data.get("row_count")
    if row_count is not None and (isinstance(row_count, bool) or not isinstance(row_count, int) or row_count < 0):
        raise MalformedRecord(f"row_count must be a count, got {row_count!r}")
    columns = data.get("columns")
    parsed_columns: tuple[tuple[str, str], ...] | None = None
    if columns is not None:
        if not isinstance(columns, list) or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("data_type"), str)
            for c in columns
        ):
            raise MalformedRecord("columns must be a list of {name, data_type}")
        parsed_columns = tuple((c["name"], c["data_type"]) for c in columns)
    return WarehouseMetadata(unique_id=data["unique_id"], row_count=row_count, columns=parsed_columns)


def column_descriptions(manifest_entry: Any) -> Mapping[str, str]:
    """Column descriptions from the manifest, keyed by lower-cased column name."""
    columns = getattr(manifest_entry, "columns", None) or {}
    return {str(name).lower(): (getattr(info, "description", "") or "") for name, info in columns.items()}


def metadata_payload(metadata: WarehouseMetadata, manifest_entry: Any) -> dict[str, Any]:
    """The keys added to a materialization payload: ``row_count`` and ``columns``."""
    payload: dict[str, Any] = {}
    if metadata.row_count is not None:
        payload["row_count"] = metadata.row_count
    if metadata.columns is not None:
        descriptions = column_descriptions(manifest_entry)
        payload["columns"] = [
            {"name": name, "data_type": data_type, "description": descriptions.get(name.lower(), "")}
            for name, data_type in metadata.columns
        ]
    return payload
