"""The data version of each source a cached build reads: a string that changes when the
source's rows change, or None where it cannot be read.

Two ways to read them, each one dbt invocation on the build's manifest:
- with the dbt package in the project, its ``dbt_prefect.source_versions`` macro (``dbt
  run-operation``). It dispatches ``relation_version`` per adapter, so a project can add
  ``<adapter>__relation_version`` for an adapter dbt-prefect does not know;
- without the package, on DuckDB and PostgreSQL, the same queries as that macro, sent
  through dbt's adapter as an inline ``dbt show``, so a user who switches from prefect-dbt
  keeps caching that sees data. The versions are written as the macro writes them, so
  adding or removing the package does not invalidate the cache.

Elsewhere every version is None, and the cache falls back to the official semantics for
the nodes that read those sources (code and config only; see cache_keys.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dbt.cli.main import dbtRunner

VERSIONS_LINE = "dbt_prefect.source_versions "
PACKAGE_MACRO = "macro.dbt_prefect.source_versions"
# The adapters whose version queries dbt-prefect can send without the package.
BUILT_IN_ADAPTERS = ("duckdb", "postgres")

# The package macro's queries (dbt_packages_src/macros/cache/), as one inline template:
# `relations` is the same list the macro takes. The final select is what `dbt show` runs.
_INLINE_TEMPLATE = r"""
{%- set relations = fromjson(__RELATIONS__) -%}
{%- set versions = {} -%}
{%- if execute -%}
{%- for given in relations -%}
  {%- set relation = adapter.get_relation(database=given.database, schema=given.schema, identifier=given.identifier) -%}
  {%- set version = none -%}
  {%- if relation is none -%}
  {%- elif given.loaded_at_field -%}
    {%- set latest = run_query("/* dbt_prefect.source_versions */ select cast(max(" ~ given.loaded_at_field ~ ") as " ~ dbt.type_string() ~ ") from " ~ relation).columns[0].values()[0] -%}
    {%- set version = none if latest is none else 'loaded_at:' ~ latest -%}
  {%- elif target.type == 'duckdb' -%}
    {%- set rows = run_query("/* dbt_prefect.relation_version */ select cast(count(*) as varchar) || ':' || coalesce(cast(sum(hash(t)) as varchar), '0') from " ~ relation ~ " as t").columns[0].values()[0] -%}
    {%- set version = 'rows:' ~ rows -%}
  {%- elif target.type == 'postgres' -%}
    {%- set kinds = run_query("/* dbt_prefect.relation_version */ select c.relkind from pg_catalog.pg_class c where c.oid = to_regclass('" ~ (relation.render() | replace("'", "''")) ~ "')").columns[0].values() -%}
    {%- if kinds | length > 0 and kinds[0] in ('r', 'p', 'm') -%}
      {%- set rows = run_query("/* dbt_prefect.relation_version */ select count(*)::text || ':' || coalesce(max(xmin::text::bigint), 0)::text || ':' || coalesce(sum(xmin::text::bigint), 0)::text from " ~ relation).columns[0].values()[0] -%}
      {%- set version = 'rows:' ~ rows -%}
    {%- endif -%}
  {%- endif -%}
  {%- do versions.update({given.id: version}) -%}
{%- endfor -%}
{%- do log('dbt_prefect.source_versions ' ~ tojson(versions), info=false) -%}
{%- endif -%}
select 1 as dbt_prefect_source_versions
"""


@dataclass(frozen=True)
class SourceVersions:
    """What was read: source id -> version (None: unknown), and why some are unknown."""

    versions: Mapping[str, str | None]
    # Why versions are missing, for the warning; empty when every one was read.
    why_unknown: str = ""


def read_source_versions(
    manifest: Any, relations: Sequence[Mapping[str, Any]], adapter_type: str | None, dbt_args: Sequence[str]
) -> SourceVersions:
    """The version of each relation (the dicts the package macro takes: id, database,
    schema, identifier, loaded_at_field). Hold the process-wide dbt lock; ``dbt_args``
    carry the rendered profiles directory."""
    ids = [r["id"] for r in relations]
    if PACKAGE_MACRO in manifest.macros:
        args = ["run-operation", "dbt_prefect.source_versions", "--args", json.dumps({"relations": list(relations)})]
        how = "the dbt package's macro dbt_prefect.source_versions"
    elif adapter_type in BUILT_IN_ADAPTERS:
        relations_text = json.dumps(json.dumps(list(relations), ensure_ascii=False), ensure_ascii=False)
        inline = _INLINE_TEMPLATE.replace("__RELATIONS__", relations_text)
        args = ["show", "--inline", inline, "--limit", "1", "--quiet"]
        how = f"dbt-prefect's {adapter_type} version queries"
    else:
        return SourceVersions(
            dict.fromkeys(ids),
            f"dbt-prefect knows no version query for the {adapter_type} adapter, and the project does not have "
            "the dbt_prefect package (add it to packages.yml, and define <adapter>__relation_version in your "
            "project for this adapter)",
        )
    captured: list[str] = []

    def listen(event: Any) -> None:
        message = getattr(getattr(event, "data", None), "msg", "")
        if isinstance(message, str) and message.startswith(VERSIONS_LINE):
            captured.append(message[len(VERSIONS_LINE) :])

    outcome = dbtRunner(manifest=manifest, callbacks=[listen]).invoke([*args, *dbt_args], log_level="none")
    if not captured:
        detail = str(outcome.exception or "").strip() or "it logged no versions"
        return SourceVersions(dict.fromkeys(ids), f"{how} failed: {detail[:500]}")
    read = json.loads(captured[-1])
    versions = {i: (None if read.get(i) is None else str(read[i])) for i in ids}
    unknown = [i for i, v in versions.items() if v is None]
    why = ""
    if unknown:
        why = (
            f"{how} found no version for them (a relation that does not exist, a PostgreSQL view, "
            "or an adapter without relation_version)"
        )
    return SourceVersions(versions, why)
