"""dbt projects for the tests: private copies of the integration project and of tests/projects/pg_shop."""

from __future__ import annotations

import shutil
from pathlib import Path

from support.postgres import SECRET_BLOCK, Postgres

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTS_DIR = REPO_ROOT / "tests"
INTEGRATION_PROJECT = REPO_ROOT / "integration_project"
PG_SHOP = TESTS_DIR / "projects" / "pg_shop"


def make_shop_copy(destination: Path) -> Path:
    """A private copy of the integration project, with its own DuckDB file and the package linked in."""
    project = destination / "integration_project"
    shutil.copytree(
        INTEGRATION_PROJECT,
        project,
        ignore=shutil.ignore_patterns("target", "logs", "dbt_packages", "*.duckdb*", "flows", "package-lock.yml"),
    )
    profiles = project / "profiles.yml"
    profiles.write_text(
        profiles.read_text().replace(
            "{{ env_var('SHOP_DUCKDB_PATH', 'shop.duckdb') }}", str(destination / "shop.duckdb")
        )
    )
    packages_yml = project / "packages.yml"
    packages_yml.write_text(packages_yml.read_text().replace("local: ..", f"local: {REPO_ROOT}"))
    # What `dbt deps` does for a local package, without a dbt invocation per test.
    packages = project / "dbt_packages"
    packages.mkdir()
    (packages / "dbt_prefect").symlink_to(REPO_ROOT, target_is_directory=True)
    return project


def make_pg_project(
    destination: Path, postgres: Postgres, schema: str, name: str = "pg_shop", threads: int = 4
) -> Path:
    """A private copy of tests/projects/pg_shop writing to `schema`, renamed to `name`.

    profiles.yml takes the password from the Prefect Secret block, never in plain text.
    """
    project = destination / name
    shutil.copytree(PG_SHOP, project, ignore=shutil.ignore_patterns("target", "logs"))
    if name != "pg_shop":
        dbt_project = project / "dbt_project.yml"
        dbt_project.write_text(dbt_project.read_text().replace("pg_shop", name))
    write_pg_profile(project, postgres, schema, name, threads)
    return project


def write_pg_profile(project: Path, postgres: Postgres, schema: str, name: str, threads: int) -> None:
    """profiles.yml for `name` on the test PostgreSQL, the password from the Prefect Secret
    block (never in plain text); and an empty `schema` to write to."""
    (project / "profiles.yml").write_text(
        f"""{name}:
  target: dev
  outputs:
    dev:
      type: postgres
      host: {postgres.host}
      port: {postgres.port}
      user: {postgres.user}
      password: "{{{{ prefect.blocks.secret.{SECRET_BLOCK} }}}}"
      dbname: postgres
      schema: {schema}
      threads: {threads}
"""
    )
    postgres.drop_schemas(schema)


def make_small_project(
    destination: Path, postgres: Postgres, schema: str, name: str, models: dict[str, str]
) -> Path:
    """A minimal project `name` with the given models (file name -> SQL), writing to `schema`."""
    project = destination / name
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        f"name: {name}\nversion: '1.0.0'\nconfig-version: 2\nprofile: {name}\n"
        "model-paths: ['models']\nflags:\n  send_anonymous_usage_stats: false\n"
    )
    for file_name, sql in models.items():
        (project / "models" / file_name).write_text(sql)
    write_pg_profile(project, postgres, schema, name, threads=2)
    return project


def without_dbt_prefect_package(project: Path) -> Path:
    """The shop copy as a prefect-dbt user has it: no dbt_prefect package, no hook or var of it."""
    dbt_project = project / "dbt_project.yml"
    text = dbt_project.read_text()
    text = text.replace('  +post-hook: "{{ dbt_prefect.collect_metadata() }}"\n', "")
    text = text.replace("  dbt_prefect:\n    run_history: true\n    run_history_schema: audit\n", "")
    assert "dbt_prefect." not in text and "dbt_prefect:" not in text
    dbt_project.write_text(text)
    (project / "packages.yml").write_text("packages: []\n")
    shutil.rmtree(project / "dbt_packages")
    return project
