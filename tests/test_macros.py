"""The dbt package's macros under plain dbt, with dbt-tests-adapter, on DuckDB and Postgres.

dbt-tests-adapter (dbt Labs' package and adapter test framework; the old pytest-dbt-adapter
is dead) builds a throwaway project per test class. Its plugin is declared in this module,
not in conftest.py: only this module asks for its fixtures (`project`, `models`, ...), no
name clashes with ours, and the ones that would leak process-wide state (DBT_LOG_PATH) are
overridden below. Each class runs once per adapter: DuckDB always, and Postgres on the
session's `postgres` server (conftest.py, started by .ci/start_postgres.sh) when dbt-postgres
is installed and PostgreSQL can be installed here (otherwise those runs are skipped).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
from dbt.tests.util import run_dbt
from dbt_common.invocation import get_invocation_id

from support.projects import REPO_ROOT

pytest_plugins = ["dbt.tests.fixtures.project"]

METADATA_RECORD = "dbt_prefect.record.metadata "
METADATA_QUERY = "/* dbt_prefect.relation_metadata */"
COLLECT_METADATA = "{{ dbt_prefect.collect_metadata() }}"


# -- dbt-tests-adapter fixtures, overridden ------------------------------------------------
@pytest.fixture(scope="class", params=["duckdb", "postgres"])
def dbt_profile_target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if request.param == "duckdb":
        return {"type": "duckdb", "path": str(tmp_path_factory.mktemp("duckdb") / "macros.duckdb"), "threads": 4}
    if importlib.util.find_spec("dbt.adapters.postgres") is None:
        pytest.skip("dbt-postgres is not installed")
    postgres = request.getfixturevalue("postgres")  # conftest.py's, shared with the orchestrator tests
    return {
        "type": "postgres", "threads": 4, "host": postgres.host, "port": postgres.port,
        "user": postgres.user, "pass": postgres.password, "dbname": "postgres",
    }


@pytest.fixture(scope="class")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # The plugin's own sets DBT_LOG_PATH for the rest of the session; this one restores it.
    path = str(tmp_path_factory.mktemp("dbt-logs"))
    previous = os.environ.get("DBT_LOG_PATH")
    os.environ["DBT_LOG_PATH"] = path
    yield path
    if previous is None:
        os.environ.pop("DBT_LOG_PATH", None)
    else:
        os.environ["DBT_LOG_PATH"] = previous


@pytest.fixture(scope="class")
def packages() -> dict[str, Any]:
    return {"packages": [{"local": str(REPO_ROOT)}]}


@pytest.fixture(scope="class", autouse=True)
def installed_package(project: Any) -> None:
    # What `dbt deps` does for a local package, without a dbt invocation per class.
    packages = Path(project.project_root) / "dbt_packages"
    packages.mkdir(exist_ok=True)
    link = packages / "dbt_prefect"
    if not link.exists():
        link.symlink_to(REPO_ROOT, target_is_directory=True)


@pytest.fixture()
def under_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """What PrefectDbtRunner sets while it emits assets (tracking.COLLECT_METADATA_ENV)."""
    monkeypatch.setenv("DBT_PREFECT_COLLECT_METADATA", "1")


class DbtLog:
    """A dbt callback keeping the package's records and its metadata queries."""

    def __init__(self) -> None:
        self.records: dict[str, Any] = {}
        self.queries: dict[str, int] = {}
        self.lines: list[str] = []

    def __call__(self, event: Any) -> None:
        name = event.info.name
        if name in ("JinjaLogDebug", "JinjaLogInfo"):
            self.lines.append(event.info.msg)
            if event.info.msg.startswith(METADATA_RECORD):
                record = json.loads(event.info.msg.removeprefix(METADATA_RECORD))
                self.records[record["unique_id"]] = record
        elif name == "SQLQuery" and METADATA_QUERY in event.data.sql:
            unique_id = event.data.node_info.unique_id
            self.queries[unique_id] = self.queries.get(unique_id, 0) + 1


def build(*args: str, expect_pass: bool = True) -> tuple[Any, DbtLog]:
    log = DbtLog()
    result = run_dbt(["build", *args], expect_pass=expect_pass, callbacks=[log])
    return result, log


# -- the project every class builds ----------------------------------------------------------
MODELS = {
    "metrics_table.sql": (
        "{{ config(materialized='table') }}\n"
        "select cast(id as integer) as id, cast(label as varchar(20)) as label, cast(amount as decimal(10, 2)) as amount\n"
        "from (select 1 as id, 'a' as label, 1.50 as amount union all select 2, 'b', 2.25 union all select 3, 'c', 3.00)"
        " as given\n"
    ),
    "metrics_view.sql": "{{ config(materialized='view') }}\nselect * from {{ ref('metrics_table') }}\n",
    "counted_view.sql": (
        "{{ config(materialized='view', meta={'prefect': {'count_view_rows': true}}) }}\n"
        "select id, label from {{ ref('metrics_table') }} where id > 1\n"
    ),
    "hidden_table.sql": (
        "{{ config(materialized='table', meta={'prefect': {'enable_assets': false}}) }}\nselect 1 as id\n"
    ),
    "uncounted_table.sql": (
        "{{ config(materialized='table', meta={'prefect': {'row_count': false}}) }}\n"
        "select cast(7 as integer) as id\n"
    ),
    "metrics_incremental.sql": (
        "{{ config(materialized='incremental', unique_key='id') }}\n"
        "select id, label from {{ ref('metrics_table') }}\n"
        "{% if is_incremental() %}where id > (select max(id) from {{ this }}){% endif %}\n"
    ),
    "ephemeral_bits.sql": "{{ config(materialized='ephemeral') }}\nselect 1 as bit\n",
    "uses_ephemeral.sql": "{{ config(materialized='table') }}\nselect bit from {{ ref('ephemeral_bits') }}\n",
    "schema.yml": (
        "models:\n"
        "  - name: metrics_table\n"
        "    columns:\n"
        "      - name: id\n"
        "        data_tests: [unique, not_null]\n"
    ),
}
SEEDS = {"tiny_seed.csv": "id,name\n1,x\n2,y\n"}
SNAPSHOTS = {
    "metrics_snapshot.yml": (
        "snapshots:\n"
        "  - name: metrics_snapshot\n"
        "    relation: ref('metrics_table')\n"
        "    config:\n"
        "      unique_key: id\n"
        "      strategy: check\n"
        "      check_cols: all\n"
    ),
}
TESTS = {
    "warn_on_labels.sql": "{{ config(severity='warn') }}\nselect * from {{ ref('metrics_table') }} where label = 'a'\n",
}
HOOKED = {
    "models": {"+post-hook": COLLECT_METADATA},
    "seeds": {"+post-hook": COLLECT_METADATA},
    "snapshots": {"+post-hook": COLLECT_METADATA},
}

COLUMN_TYPES = {
    "duckdb": {"int": "INTEGER", "label": "VARCHAR", "amount": "DECIMAL(10,2)", "text": "VARCHAR",
               "timestamp": "TIMESTAMP", "bit": "INTEGER"},
    "postgres": {"int": "integer", "label": "character varying(20)", "amount": "numeric(10,2)", "text": "text",
                 "timestamp": "timestamp without time zone", "bit": "integer"},
}


def expected_records(adapter_type: str) -> dict[str, Any]:
    types = COLUMN_TYPES[adapter_type]
    metrics = [
        {"name": "id", "data_type": types["int"]},
        {"name": "label", "data_type": types["label"]},
        {"name": "amount", "data_type": types["amount"]},
    ]
    return {
        "model.test.metrics_table": {"unique_id": "model.test.metrics_table", "row_count": 3, "columns": metrics},
        "model.test.metrics_view": {"unique_id": "model.test.metrics_view", "columns": metrics},
        "model.test.counted_view": {"unique_id": "model.test.counted_view", "row_count": 2, "columns": metrics[:2]},
        "model.test.uncounted_table": {"unique_id": "model.test.uncounted_table",
                                       "columns": [{"name": "id", "data_type": types["int"]}]},
        "model.test.metrics_incremental": {"unique_id": "model.test.metrics_incremental", "row_count": 3,
                                           "columns": metrics[:2]},
        "model.test.uses_ephemeral": {"unique_id": "model.test.uses_ephemeral", "row_count": 1,
                                      "columns": [{"name": "bit", "data_type": types["bit"]}]},
        "seed.test.tiny_seed": {"unique_id": "seed.test.tiny_seed", "row_count": 2,
                                "columns": [{"name": "id", "data_type": types["int"]},
                                            {"name": "name", "data_type": types["text"]}]},
        "snapshot.test.metrics_snapshot": {
            "unique_id": "snapshot.test.metrics_snapshot", "row_count": 3,
            "columns": metrics + [
                {"name": "dbt_scd_id", "data_type": types["text"]},
                {"name": "dbt_updated_at", "data_type": types["timestamp"]},
                {"name": "dbt_valid_from", "data_type": types["timestamp"]},
                {"name": "dbt_valid_to", "data_type": types["timestamp"]},
            ],
        },
    }


class ShopLikeProject:
    @pytest.fixture(scope="class")
    @classmethod
    def models(cls) -> dict[str, str]:
        return MODELS

    @pytest.fixture(scope="class")
    @classmethod
    def seeds(cls) -> dict[str, str]:
        return SEEDS

    @pytest.fixture(scope="class")
    @classmethod
    def snapshots(cls) -> dict[str, str]:
        return SNAPSHOTS

    @pytest.fixture(scope="class")
    @classmethod
    def tests(cls) -> dict[str, str]:
        return TESTS


class TestCollectMetadata(ShopLikeProject):
    @pytest.fixture(scope="class")
    @classmethod
    def project_config_update(cls) -> dict[str, Any]:
        return HOOKED

    def test_records_the_row_count_and_columns_of_each_relation(self, project: Any, under_the_runner: None) -> None:
        _, log = build()
        assert log.records == expected_records(project.adapter_type)

    def test_runs_one_query_per_relation_and_none_for_assets_turned_off(self, project: Any, under_the_runner: None) -> None:
        _, log = build()
        assert log.queries == {unique_id: 1 for unique_id in expected_records(project.adapter_type)}
        assert "model.test.hidden_table" not in log.queries

    def test_does_nothing_under_plain_dbt(self, project: Any) -> None:
        _, log = build()
        assert log.records == {}
        assert log.queries == {}

    def test_the_package_var_turns_collection_off(self, project: Any, under_the_runner: None) -> None:
        _, log = build("--vars", "{dbt_prefect: {row_counts: false, columns: false}}")
        assert log.records == {} and log.queries == {}
        _, log = build("--vars", "{dbt_prefect: {columns: false}}", "--select", "metrics_table", "metrics_view")
        assert log.records == {"model.test.metrics_table": {"unique_id": "model.test.metrics_table", "row_count": 3}}

    def test_the_portable_default_reads_the_same_columns(self, project: Any) -> None:
        log = DbtLog()
        run_dbt(["run-operation", "log_default_metadata"], callbacks=[log])
        records = [json.loads(line.removeprefix("default ")) for line in log.lines if line.startswith("default ")]
        types = COLUMN_TYPES[project.adapter_type]
        # information_schema.columns: Postgres reports the type without its length or precision.
        label, amount = (types["label"], types["amount"]) if project.adapter_type == "duckdb" else ("character varying", "numeric")
        assert records == [{
            "unique_id": "model.test.metrics_table", "row_count": 3,
            "columns": [{"name": "id", "data_type": types["int"]}, {"name": "label", "data_type": label},
                        {"name": "amount", "data_type": amount}],
        }]

    @pytest.fixture(scope="class")
    @classmethod
    def macros(cls) -> dict[str, str]:
        return {
            "log_default_metadata.sql": (
                "{% macro log_default_metadata() %}\n"
                "  {%- set relation = ref('metrics_table') -%}\n"
                "  {%- set counted = '(select count(*) from ' ~ relation ~ ')' -%}\n"
                "  {%- set table = run_query(dbt_prefect.default__relation_metadata_sql(relation, counted)) -%}\n"
                "  {%- set record = dbt_prefect.metadata_record('model.test.metrics_table', table,"
                " {'row_count': true, 'columns': true}) -%}\n"
                "  {%- do log('default ' ~ tojson(record), info=True) -%}\n"
                "{% endmacro %}\n"
            )
        }


HISTORY_COLUMNS = [
    "invocation_id", "flow_run_id", "task_run_id", "unique_id", "resource_type", "status", "started_at",
    "finished_at", "execution_time", "rows_affected", "row_count", "message",
]


def history_rows(project: Any, schema: str) -> list[dict[str, Any]]:
    rows = project.run_sql(
        f"select {', '.join(HISTORY_COLUMNS)} from {schema}.dbt_prefect_run_history order by unique_id, started_at",
        fetch="all",
    )
    return [dict(zip(HISTORY_COLUMNS, row)) for row in rows]


def expected_history(results: Any) -> list[dict[str, Any]]:
    """The rows record_run_history writes for a build, from dbt's own results."""
    counted = {  # what metadata_switches allows counting, when the node succeeded
        "model.test.metrics_table": 3, "model.test.counted_view": 2, "model.test.metrics_incremental": 3,
        "model.test.uses_ephemeral": 1, "seed.test.tiny_seed": 2, "snapshot.test.metrics_snapshot": 3,
    }
    rows = []
    for result in results:
        node = result.node
        if node.resource_type == "operation":  # run hooks are not nodes
            continue
        rows.append({
            "invocation_id": get_invocation_id(),
            "flow_run_id": None,
            "task_run_id": None,
            "unique_id": node.unique_id,
            "resource_type": str(node.resource_type),
            "status": str(result.status),
            "started_at": result.timing[0].started_at,
            "finished_at": result.timing[-1].completed_at,
            "execution_time": result.execution_time,
            "rows_affected": result.adapter_response.get("rows_affected"),
            "row_count": counted.get(node.unique_id),
            "message": result.message,
        })
    return sorted(rows, key=lambda row: row["unique_id"])


class TestRunHistory(ShopLikeProject):
    @pytest.fixture(scope="class")
    @classmethod
    def project_config_update(cls, unique_schema: str) -> dict[str, Any]:
        return {**HOOKED, "vars": {"dbt_prefect": {"run_history": True, "run_history_schema": f"{unique_schema}_audit"}}}

    def test_appends_one_row_per_executed_node(self, project: Any) -> None:
        results, log = build()
        rows = history_rows(project, f"{project.test_schema}_audit")
        assert rows == expected_history(results.results)
        # Under plain dbt the post-hook queries nothing: the history counts in its insert.
        assert log.queries == {}
        statuses = {row["unique_id"]: row["status"] for row in rows}
        assert statuses["test.test.warn_on_labels"] == "warn"
        assert statuses["model.test.metrics_table"] == "success"
        assert len(rows) == 12  # 8 models less the ephemeral one, a seed, a snapshot, 3 tests

    def test_creation_is_idempotent_and_runs_accumulate(self, project: Any) -> None:
        build("--select", "metrics_table")
        build("--select", "metrics_table")
        rows = history_rows(project, f"{project.test_schema}_audit")
        by_invocation: dict[str, int] = {}
        for row in rows:
            by_invocation[row["invocation_id"]] = by_invocation.get(row["invocation_id"], 0) + 1
        # The first test's build, then two builds of metrics_table and its 3 tests.
        assert sorted(by_invocation.values()) == [4, 4, 12]


class TestPlainDbtWithThePackage(ShopLikeProject):
    """No var, no post-hook: the package's on-run-end hook is there and does nothing."""

    def test_build_succeeds_and_writes_no_history(self, project: Any) -> None:
        results, log = build()
        assert sorted(str(r.node.resource_type) for r in results.results) == sorted(
            ["operation"] + ["model"] * 7 + ["seed", "snapshot"] + ["test"] * 3
        )
        assert log.records == {} and log.queries == {}
        assert not [line for line in log.lines if line.startswith("dbt_prefect.record.")]
        tables = project.run_sql(
            "select count(*) from information_schema.tables where table_name = 'dbt_prefect_run_history'"
            f" and table_schema like '{project.test_schema}%'",
            fetch="one",
        )
        assert tables[0] == 0
