"""ship_project packs the project's files and its installed packages, never its secrets,
its output or what its .gitignore excludes (orchestrator/shipping.py), over a real directory."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from dbt_prefect.orchestrator.shipping import pack_project, shipped_files


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _archive_names(project: Path) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(pack_project(project)), mode="r:gz") as archive:
        return sorted(member.name for member in archive.getmembers())


def test_the_archive_leaves_out_secrets_output_and_what_gitignore_excludes(tmp_path: Path) -> None:
    project = tmp_path / "shop"
    _write(
        project,
        {
            "dbt_project.yml": "name: shop\nprofile: shop\n",
            "packages.yml": "packages: []\n",
            ".gitignore": "\n".join(
                [
                    "# comments and blank lines are not patterns",
                    "",
                    "notes.txt",  # a name, anywhere
                    "scratch/",  # a folder, anywhere
                    "*.bak",  # an extension
                    "/local_only.sql",  # anchored at the root
                    "**/generated",  # in any folder
                    "*.csv",
                    "!seeds/keep.csv",  # negation re-includes
                ]
            ),
            ".dbtignore": "models/wip/\n",
            "models/orders.sql": "select 1 as id",
            "models/notes.txt": "ignored by name",
            "models/orders.sql.bak": "ignored by extension",
            "models/scratch/try.sql": "ignored folder",
            "models/generated/gen.sql": "ignored by **/generated",
            "models/local_only.sql": "not at the root: shipped",
            "models/staging/.gitignore": "!keep.bak\nstaging_only.sql\n",
            "models/staging/keep.bak": "a deeper negation wins",
            "models/staging/staging_only.sql": "ignored by the nested .gitignore",
            "models/staging/stg_orders.sql": "select 1 as id",
            "local_only.sql": "ignored: anchored",
            "seeds/raw.csv": "ignored by *.csv",
            "seeds/keep.csv": "id\n1\n",
            "macros/.env.example": "left out: .env.*",
            ".env": "SECRET=1",
            "profiles.yml": "shop: {}",
            "models/profiles.yml": "left out anywhere",
            "target/manifest.json": "{}",
            "logs/dbt.log": "",
            ".git/HEAD": "ref: refs/heads/main",
            "shop.duckdb": "",
            "dbt_packages/utils/dbt_project.yml": "name: utils\n",
            "dbt_packages/utils/macros/m.sql": "{% macro m() %}1{% endmacro %}",
            "dbt_packages/utils/.gitignore": "*.log\n",
            "dbt_packages/utils/debug.log": "ignored by the package's .gitignore",
            "dbt_packages/utils/.git/HEAD": "ref",
            "dbt_packages/utils/target/run.json": "{}",
            "dbt_packages/utils/integration_tests/profiles.yml": "x: {}",
            "dbt_packages/utils/integration_tests/dbt_project.yml": "name: it\n",
            "dbt_packages/utils/dbt_packages/nested/dbt_project.yml": "name: nested\n",
        },
    )
    # A `local:` package installed as a symlink ships its files, not the link.
    linked = tmp_path / "linked_src"
    _write(linked, {"dbt_project.yml": "name: linked\n", "macros/l.sql": "", ".env": "S=1", "logs/x.log": ""})
    (project / "dbt_packages" / "linked").symlink_to(linked, target_is_directory=True)

    assert _archive_names(project) == [
        ".dbtignore",
        ".gitignore",
        "dbt_packages/linked/dbt_project.yml",
        "dbt_packages/linked/macros/l.sql",
        "dbt_packages/utils/.gitignore",
        "dbt_packages/utils/dbt_project.yml",
        "dbt_packages/utils/integration_tests/dbt_project.yml",
        "dbt_packages/utils/macros/m.sql",
        "dbt_project.yml",
        "models/local_only.sql",
        "models/orders.sql",
        "models/staging/.gitignore",
        "models/staging/keep.bak",
        "models/staging/stg_orders.sql",
        "packages.yml",
        "seeds/keep.csv",
    ]
    # Files, never links: the worker's extraction (tarfile's "data" filter) refuses links out of the tree.
    with tarfile.open(fileobj=io.BytesIO(pack_project(project)), mode="r:gz") as archive:
        assert {member.type for member in archive.getmembers()} == {tarfile.REGTYPE}
        extracted = archive.extractfile("dbt_packages/linked/dbt_project.yml")
        assert extracted is not None and extracted.read() == b"name: linked\n"


def test_dbt_project_yml_names_the_folders_left_out(tmp_path: Path) -> None:
    project = tmp_path / "p"
    _write(
        project,
        {
            "dbt_project.yml": "name: p\ntarget-path: build_out\nlog-path: dbt_logs\npackages-install-path: vendor\n",
            "models/a.sql": "select 1",
            "build_out/manifest.json": "{}",
            "dbt_logs/dbt.log": "",
            "target/kept.txt": "target/ is only the default",
            "vendor/pkg/dbt_project.yml": "name: pkg\n",
            "vendor/pkg/logs/x.log": "",
        },
    )
    assert [name for _, name in shipped_files(project)] == [
        "dbt_project.yml",
        "models/a.sql",
        "target/kept.txt",
        "vendor/pkg/dbt_project.yml",
    ]
