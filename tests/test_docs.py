"""The documentation is checked like code: nothing the README said is lost, every example
runs or is marked as a fragment on purpose, and the generated references follow the code.

The site's strict build and its link check run in CI (`python3 dev.py docs`); the example
files run in tests/test_docs_examples.py. These tests need no server and no build.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.projects import REPO_ROOT

DOCS = REPO_ROOT / "docs"
EXAMPLES = DOCS / "examples"
HOOKS = DOCS / "hooks"
if str(HOOKS) not in sys.path:
    sys.path.insert(0, str(HOOKS))

import check_site  # noqa: E402
import reference_cli  # noqa: E402
import reference_code  # noqa: E402

# Every heading of the README as it was before it became a front page (commit 36d9e3f),
# and the page of the site it now lives on.
README_HEADINGS_AT_36D9E3F = {
    "dbt-prefect": "index.md",
    "Try it: two commands": "tutorial/index.md",
    "Basic usage": "tutorial/your-project.md",
    "How it works, and why it is cheap": "explanation/how-it-works.md",
    "Command line: `dbt-prefect`": "how-to/cli.md",
    "Run report artifact": "reference/run-report.md",
    "Retries: rerun only what failed": "how-to/retries.md",
    "Build only what changed": "how-to/only-changed.md",
    "Failure handling": "how-to/failures.md",
    "When Prefect is unavailable": "how-to/prefect-unavailable.md",
    "Cancellation and timeouts": "how-to/cancellation.md",
    "Lifecycle hooks": "how-to/lifecycle-hooks.md",
    "Assets": "how-to/assets.md",
    "Where to see the assets": "how-to/assets.md",
    "Your own keys and names: `DbtPrefectTranslator`": "how-to/assets.md",
    "Native dbt configuration: `meta.prefect`": "how-to/assets.md",
    "Warehouse metadata, tests as checks, run history": "how-to/warehouse-metadata.md",
    "dbt settings": "reference/settings.md",
    "Logging": "how-to/logging.md",
    "profiles.yml templating": "how-to/profiles.md",
    "Prefect runs the DAG: `PrefectDbtOrchestrator`": "how-to/orchestrator.md",
    "Caching: skip what did not change, in code or in data": "how-to/caching.md",
    "Per node, on Dask": "how-to/dask.md",
    "Performance": "explanation/performance.md",
    "Development": "explanation/architecture.md",
}

# Fenced blocks in these languages must run in the test suite or be marked as fragments.
RUNNABLE_LANGUAGES = {"python", "py", "python3", "pycon", "bash", "sh", "shell", "console", "zsh"}
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<info>[^\n`]*)$")
FRAGMENT = re.compile(r"^\s*<!-- fragment: (?P<why>\S.*\S) -->$")
SNIPPET = re.compile(r'^--8<-- "(?P<path>[^"]+)"$')


def headings(markdown: str) -> list[str]:
    """The ATX headings of a markdown text, outside fenced code."""
    found, in_fence = [], False
    for line in markdown.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (match := re.match(r"^#{1,6} (.+?)\s*#*$", line)):
            found.append(match.group(1))
    return found


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if not p.is_relative_to(HOOKS) and p.parent.name != "screenshots")


def code_blocks(path: Path) -> list[tuple[int, str, list[str], str | None]]:
    """(line, language, lines, fragment reason) of each fenced block of a markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        language = opening.group("info").strip().split(" ")[0].lstrip("{.").rstrip("}").lower()
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(opening.group("fence")):
            body.append(lines[end].strip())
            end += 1
        above = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marker = FRAGMENT.match(above)
        blocks.append((index + 1, language, body, marker.group("why") if marker else None))
        index = end + 1
    return blocks


# -- nothing of the README is lost ---------------------------------------------------------
@pytest.mark.parametrize("heading", sorted(README_HEADINGS_AT_36D9E3F))
def test_every_heading_of_the_old_readme_lands_on_a_page(heading: str) -> None:
    page = DOCS / README_HEADINGS_AT_36D9E3F[heading]
    assert heading in headings(page.read_text(encoding="utf-8")), (
        f"{heading!r} is not a heading of docs/{page.relative_to(DOCS)}"
    )


def test_the_list_of_old_headings_is_the_readme_at_36d9e3f() -> None:
    old = subprocess.run(["git", "show", "36d9e3f:README.md"], cwd=REPO_ROOT, capture_output=True, text=True)
    if old.returncode != 0:
        pytest.skip(f"commit 36d9e3f is not in this clone's history: {old.stderr.strip()}")
    assert sorted(headings(old.stdout)) == sorted(README_HEADINGS_AT_36D9E3F)


def test_the_readme_is_a_front_page_with_the_two_commands_the_flow_and_the_switch() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    assert "python3 dev.py demo" in readme and "python3 dev.py test" in readme
    assert "+from dbt_prefect import PrefectDbtRunner" in readme
    python_blocks = [
        "\n".join(body) for _, language, body, _ in code_blocks(REPO_ROOT / "README.md") if language == "python"
    ]
    ten_line_flow = "\n".join(line.strip() for line in (EXAMPLES / "basic_flow.py").read_text().splitlines())
    assert python_blocks == [ten_line_flow]
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)", readme))
    assert {"docs/tutorial/index.md", "docs/migrating.md", "docs/reference/python-api.md"} <= linked
    for target in linked:
        assert (REPO_ROOT / target).exists(), f"the README links to {target}, which does not exist"
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme):
        assert (REPO_ROOT / image).exists(), f"the README shows {image}, which does not exist"


# -- examples run, or are fragments on purpose ------------------------------------------------
def test_every_python_and_shell_block_is_an_example_that_runs_or_a_marked_fragment() -> None:
    from test_docs_examples import RUN_HERE

    unmarked = []
    for path in [*pages(), REPO_ROOT / "README.md"]:
        for line, language, body, fragment in code_blocks(path):
            if language not in RUNNABLE_LANGUAGES or fragment is not None:
                continue
            where = f"{path.relative_to(REPO_ROOT)}:{line}"
            snippet = SNIPPET.match(body[0]) if len(body) == 1 else None
            if snippet and Path(snippet.group("path")).parent == Path("docs/examples"):
                assert Path(snippet.group("path")).name in RUN_HERE, f"{where} includes an example no test runs"
                continue
            if path.name == "README.md" and language == "python":
                continue  # checked against docs/examples/basic_flow.py above
            unmarked.append(where)
    assert unmarked == [], (
        "a Python or shell block that is neither an included docs/examples/ file nor marked "
        "`<!-- fragment: why -->` on the line above it"
    )


def test_a_fragment_marker_must_say_why() -> None:
    assert FRAGMENT.match("<!-- fragment: needs a Snowflake account -->")
    assert not FRAGMENT.match("<!-- fragment: -->")
    assert not FRAGMENT.match("<!-- fragment -->")


def test_every_example_file_is_run_by_a_test_and_shown_on_a_page() -> None:
    from test_docs_examples import RUN_HERE

    files = {p.name for p in EXAMPLES.iterdir() if p.is_file()}
    assert files == RUN_HERE
    tests = (REPO_ROOT / "tests" / "test_docs_examples.py").read_text(encoding="utf-8")
    included = "\n".join(p.read_text(encoding="utf-8") for p in pages())
    for name in sorted(files):
        assert f'run_example("{name}"' in tests, f"no test runs docs/examples/{name}"
        assert f'--8<-- "docs/examples/{name}"' in included, f"no page includes docs/examples/{name}"


# -- generated references -----------------------------------------------------------------
def test_the_cli_reference_has_every_command_and_option_of_the_app() -> None:
    import click  # noqa: F401  (typer's own copy is read by duck typing; see reference_cli)
    import typer.main

    from dbt_prefect.cli.main import app

    markdown = reference_cli.cli_reference()
    root = typer.main.get_command(app)
    for path, command in _commands(root, "dbt-prefect"):
        assert f"## `{path}`" in markdown, path
        for param in command.params:
            if param.param_type_name == "option":
                assert f"| `{param.opts[0]}" in markdown or f", {param.opts[0]}" in markdown, f"{path} {param.opts[0]}"
    assert "`DBT_PREFECT_STATE_STORE`" in markdown


def test_a_command_added_to_an_app_appears_in_its_reference() -> None:
    import typer

    app = typer.Typer()

    @app.command()
    def init(out: str = typer.Option(".", "--out", help="Where the scaffold goes.")) -> None:
        """Scaffold a Prefect project."""

    @app.command()
    def serve(cron: str = typer.Option(None, "--cron", envvar="SERVE_CRON", help="A cron schedule.")) -> None:
        """Serve the build."""

    markdown = reference_cli.cli_reference(app, prog="tool")
    assert "## `tool init`" in markdown and "## `tool serve`" in markdown
    assert "| `--out <str>` |  | `.` | Where the scaffold goes. |" in markdown
    assert "| `--cron <str>` | `SERVE_CRON` |  | A cron schedule. |" in markdown


def _commands(command, path):  # type: ignore[no-untyped-def]
    if hasattr(command, "list_commands"):
        for name in command.list_commands(None):
            yield from _commands(command.get_command(None, name), f"{path} {name}")
    else:
        yield path, command


def test_the_status_table_has_every_status_dbt_has() -> None:
    from dbt.artifacts.schemas.results import NodeStatus

    table = reference_code.status_table()
    rows = [line for line in table.splitlines()[2:] if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == [status.value for status in NodeStatus] + ["cached"]
    assert "| `skipped` | skipped | `Skipped` (COMPLETED) | `SKIP` |" in table
    assert "| `no-op` | no-op | `No-op` (COMPLETED) | `NO-OP` |" in table


def test_the_settings_table_fails_the_build_when_a_field_is_undocumented(monkeypatch: pytest.MonkeyPatch) -> None:
    table = reference_code.settings_table()
    assert "| `log_level` | `DBT_LOG_LEVEL` |" in table
    monkeypatch.delitem(reference_code.SETTING_DEFAULTS, "target_path")
    with pytest.raises(reference_code.ReferenceError, match="target_path"):
        reference_code.settings_table()


def test_the_macro_reference_has_every_macro_file_of_the_package() -> None:
    markdown = reference_code.macro_reference()
    files = sorted((REPO_ROOT / "dbt_packages_src" / "macros").rglob("*.sql"))
    assert len(files) > 10
    for path in files:
        assert f"#### `{path.stem}`" in markdown
    assert (
        "Implementations: `default__relation_version`, `duckdb__relation_version`, `postgres__relation_version`."
        in markdown
    )


def test_the_vars_table_has_every_key_of_the_var_dbt_prefect() -> None:
    table = reference_code.vars_table()
    keys = [line.split("`")[1] for line in table.splitlines()[2:]]
    assert keys == ["row_counts", "columns", "run_history", "run_history_schema", "run_history_table"]
    assert "| `run_history` | `false` |" in table


def test_the_meta_prefect_reference_lists_every_key_with_its_default() -> None:
    from dbt_prefect.model.nodes import PREFECT_CONFIG_DEFAULTS
    from dbt_prefect.model.package_contract import PREFECT_CONFIG_KEYS

    page = (DOCS / "reference" / "meta-prefect.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| `?([^`|]+?)`? \|", page, re.M))
    assert set(rows) == {*PREFECT_CONFIG_KEYS, "asset_key"}
    for key, default in PREFECT_CONFIG_DEFAULTS.items():
        assert rows[key] == str(default).lower(), key
    assert rows["asset_key"] == "none"


def _environment_variables_in_the_package() -> set[str]:
    """Every DBT_* and PREFECT_* name in the package's string literals (docstrings left out),
    and every name the package reads from os.environ."""
    name = re.compile(r"(?<![A-Za-z0-9_])((?:DBT|PREFECT)_[A-Z][A-Z0-9_]*)")
    found: set[str] = set()
    for path in (REPO_ROOT / "python" / "dbt_prefect").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                found.update(name.findall(node.value))
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("get", "getenv")
                and ast.unparse(node.func.value) in ("os.environ", "os")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.add(node.args[0].value)
    return found


def test_every_environment_variable_the_package_uses_is_on_the_settings_page() -> None:
    page = (DOCS / "reference" / "settings.md").read_text(encoding="utf-8")
    used = _environment_variables_in_the_package()
    assert {"DBT_PREFECT_STATE_STORE", "DBT_FAIL_FAST", "PREFECT_API_URL", "CI"} <= used
    # Prefixes (DBT_ENV_SECRET_PREFECT_) are documented with their <N>.
    missing = sorted(
        v for v in used if v not in page and f"`{v}<N>`" not in page and v.rstrip("_") + "_<N>" not in page
    )
    assert missing == []
    # The settings table is generated; its variables come from PrefectDbtSettings.
    assert "<!-- generated: settings-table -->" in page


# -- the site's own link check -------------------------------------------------------------
def test_the_site_check_finds_broken_links_missing_anchors_and_outside_assets(tmp_path: Path) -> None:
    (tmp_path / "guide").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="guide/">ok</a> <a href="guide/#here">ok</a> <a href="https://example.org/">a link out</a>'
        '<a href="missing/">broken</a> <a href="guide/#nowhere">no anchor</a>'
        '<script src="https://cdn.example.org/x.js"></script> <img src="img/a.png">'
        '<link rel="stylesheet" href="//fonts.example.org/css">'
    )
    (tmp_path / "guide" / "index.html").write_text('<h2 id="here">Here</h2> <pre class="mermaid">graph LR</pre>')
    (tmp_path / "style.css").write_text("@import url(https://fonts.example.org/roboto.css);")
    problems, outside_links = check_site.check(tmp_path)
    assert outside_links == 1
    assert sorted(problems) == sorted(
        [
            "index.html: missing/ names missing/index.html, which is not in the site",
            "index.html: guide/#nowhere: no id 'nowhere' on guide/index.html",
            "index.html: <script src> loads https://cdn.example.org/x.js from outside the site",
            "index.html: img/a.png names img/a.png, which is not in the site",
            "index.html: <link href> loads //fonts.example.org/css from outside the site",
            "guide/index.html: a mermaid diagram, and no mermaid script of the site's own: Material would load it from a CDN",
            "style.css: loads url(https://… from outside the site",
        ]
    )
