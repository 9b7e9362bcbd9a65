"""MkDocs hook: the parts of the site made from the code at every build, so they cannot go stale.

A page asks for a generated part with a marker alone on its line:

    <!-- generated: cli-reference -->

and the hook puts the part's markdown in its place before the page is converted, so its
links and anchors are checked like the rest (the build is strict). An unknown name fails
the build, and so does a generator that finds the code and its reference out of step.

It also adds the benchmark's plot, benchmarks/results/ratio-vs-nodes.png, to the site as
assets/benchmarks/ratio-vs-nodes.png: the performance page shows the file the benchmark
wrote, not a copy.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

HOOKS = Path(__file__).resolve().parent
ROOT = HOOKS.parents[1]
if str(HOOKS) not in sys.path:
    sys.path.insert(0, str(HOOKS))

import reference_cli  # noqa: E402
import reference_code  # noqa: E402

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.M)

GENERATORS: dict[str, Callable[[], str]] = {
    "cli-reference": reference_cli.cli_reference,
    "status-table": reference_code.status_table,
    "settings-table": reference_code.settings_table,
    "macro-reference": reference_code.macro_reference,
    "vars-table": reference_code.vars_table,
}

# Files from outside docs/ that the site serves: where the site has them <- where they are.
OUTSIDE_FILES = {
    "assets/benchmarks/ratio-vs-nodes.png": ROOT / "benchmarks" / "results" / "ratio-vs-nodes.png",
}


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    for site_path, source in OUTSIDE_FILES.items():
        if not source.exists():
            raise PluginError(f"the site serves {site_path} from {source.relative_to(ROOT)}, which does not exist")
        files.append(File.generated(config, site_path, abs_src_path=str(source)))
    return files


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    def generate(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise PluginError(
                f"{page.file.src_uri}: no generated part named {name!r} (known: {', '.join(sorted(GENERATORS))})"
            )
        try:
            return GENERATORS[name]().rstrip("\n")
        except reference_code.ReferenceError as exc:
            raise PluginError(f"{page.file.src_uri}: {name}: {exc}") from exc

    return MARKER.sub(generate, markdown)
