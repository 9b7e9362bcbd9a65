"""A private copy of tests/projects/hostile_names, with its models whose file names are not portable.

dbt takes a model's name from its file name. Quotes, colons and angle brackets cannot be in
a file name on Windows, and macOS rewrites accented letters, so these models are written
here rather than kept in the repository. Plain Python: the browser check
(tests/scripts/check_ui_pages.py) uses it too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

HOSTILE_NAMES = Path(__file__).resolve().parents[1] / "projects" / "hostile_names"

# Model name -> SQL. Every name is one dbt accepts (no spaces); each is built.
GENERATED_MODELS = {
    "it's": "select * from {{ ref('class') }}\n",
    # DuckDB cannot quote a name with a double quote in it: the relation gets an alias.
    '"quoted"': "{{ config(alias='quoted') }}\nselect * from {{ ref('end') }}\n",
    "100%#1<b>&amp;": "select * from {{ ref('end') }}\n",
    "style:#1;": "select * from {{ ref('end') }}\n",
    "😀_emoji": "select * from {{ ref('end') }}\n",
    "café_ünï_数据": (
        "select g.id, g.name\nfrom {{ ref(\"it's\") }} as i\njoin {{ ref('graph') }} as g on g.id = i.id\n"
    ),
}


def make_hostile_copy(destination: Path, duckdb_path: Path | None = None) -> Path:
    """The project in ``destination/hostile_names``, writing to its own DuckDB file."""
    project = destination / "hostile_names"
    shutil.copytree(HOSTILE_NAMES, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*"))
    for name, sql in GENERATED_MODELS.items():
        (project / "models" / f"{name}.sql").write_text(sql, encoding="utf-8")
    database = duckdb_path or destination / "hostile.duckdb"
    profiles = project / "profiles.yml"
    profiles.write_text(
        profiles.read_text().replace("{{ env_var('HOSTILE_DUCKDB_PATH', 'hostile.duckdb') }}", str(database))
    )
    return project
