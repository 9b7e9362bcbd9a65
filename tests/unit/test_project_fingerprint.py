"""The orchestrator's project fingerprint (the key of a worker's warm project) and the
files ship_project packs, over real directories with the symlinks `dbt deps` makes for
`local:` packages: one up the tree (`local: ../`), one into a sibling folder."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

from dbt_prefect.orchestrator.preparation import _project_files, _project_fingerprint
from dbt_prefect.orchestrator.shipping import pack_project


# The files of _package_repo's project, its three installed packages among them, each once.
PROJECT_FILES = [
    "dbt_packages/local_package/dbt_project.yml",
    "dbt_packages/local_package/models/p.sql",
    "dbt_packages/my_package/dbt_project.yml",
    "dbt_packages/my_package/macros/m.sql",
    "dbt_packages/utils/dbt_project.yml",
    "dbt_packages/utils/macros/u.sql",
    "dbt_project.yml",
    "local_package/dbt_project.yml",
    "local_package/models/p.sql",
    "models/a.sql",
    "packages.yml",
]


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _package_repo(tmp_path: Path) -> Path:
    """A dbt package repository whose integration test project installs the package with
    `local: ../` and a sibling package with `local: ../../vendor/utils`, as dbt deps does."""
    repo = tmp_path / "my_package"
    _write(
        repo,
        {
            "dbt_project.yml": "name: my_package\n",
            "macros/m.sql": "{% macro m() %}1{% endmacro %}",
            "integration_tests/dbt_project.yml": "name: integration_tests\nprofile: integration_tests\n",
            "integration_tests/models/a.sql": "select 1 as id",
            "integration_tests/packages.yml": "packages:\n  - local: ../\n  - local: ../../vendor/utils\n",
            "integration_tests/local_package/dbt_project.yml": "name: local_package\n",
            "integration_tests/local_package/models/p.sql": "select 2 as id",
        },
    )
    _write(tmp_path / "vendor" / "utils", {"dbt_project.yml": "name: utils\n", "macros/u.sql": "{% macro u() %}{% endmacro %}"})
    installed = repo / "integration_tests" / "dbt_packages"
    installed.mkdir()
    (installed / "my_package").symlink_to(repo, target_is_directory=True)  # up the tree: a loop
    (installed / "utils").symlink_to(tmp_path / "vendor" / "utils", target_is_directory=True)
    # A package inside the project, installed as a link too (dbt_project_evaluator's exclude_package).
    (installed / "local_package").symlink_to(repo / "integration_tests" / "local_package", target_is_directory=True)
    return repo / "integration_tests"


def test_a_link_up_the_tree_is_walked_once_and_the_walk_ends(tmp_path: Path) -> None:
    project = _package_repo(tmp_path)
    started = time.monotonic()
    files = sorted(str(p.relative_to(project)) for p in _project_files(project))
    assert time.monotonic() - started < 5
    assert files == PROJECT_FILES


def test_the_fingerprint_changes_when_a_file_of_a_linked_package_changes(tmp_path: Path) -> None:
    project = _package_repo(tmp_path)
    before = _project_fingerprint(project)
    assert _project_fingerprint(project) == before
    macro = tmp_path / "vendor" / "utils" / "macros" / "u.sql"
    macro.write_text("{% macro u() %}changed, longer{% endmacro %}")
    after_sibling = _project_fingerprint(project)
    assert after_sibling != before
    own_macro = tmp_path / "my_package" / "macros" / "m.sql"
    stat = own_macro.stat()
    os.utime(own_macro, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert _project_fingerprint(project) != after_sibling


def test_the_fingerprint_ignores_output_and_database_files(tmp_path: Path) -> None:
    project = _package_repo(tmp_path)
    before = _project_fingerprint(project)
    _write(project, {"target/manifest.json": "{}", "logs/dbt.log": "x", "dev.duckdb": "", "dev.duckdb.wal": ""})
    assert _project_fingerprint(project) == before


def test_ship_project_packs_every_installed_package_once_and_never_loops(tmp_path: Path) -> None:
    project = _package_repo(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(pack_project(project)), mode="r:gz") as archive:
        names = sorted(member.name for member in archive.getmembers())
    # What the fingerprint walks is what ships: each package once, under dbt's install path.
    assert names == PROJECT_FILES
