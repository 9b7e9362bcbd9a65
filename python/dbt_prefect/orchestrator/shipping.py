"""What ``ship_project=True`` packs: the project's files a worker needs, never its secrets or output.

The rule, applied at the project's root and again at the root of each installed package:

- never shipped, whatever a ``.gitignore`` says: ``.env`` and ``.env.*``, ``profiles.yml``
  (the profile travels rendered, with its secrets as env_var() references), ``.git``,
  ``.venv``, ``__pycache__``, DuckDB files, and the ``target-path``, ``log-path`` and
  ``packages-install-path`` directories (``target/``, ``logs/``, ``dbt_packages/`` unless
  ``dbt_project.yml`` names others);
- what a ``.gitignore`` (at the root or in any folder) excludes is not shipped either.
  Matching is git's own syntax, through pathspec's gitwildmatch patterns (pathspec is a
  dependency of dbt-core, which reads ``.dbtignore`` with it): ``name``, ``dir/``,
  ``*.ext``, ``/anchored``, ``**/x`` and ``!negation``, the deeper file winning. As in git,
  a file inside an excluded folder cannot be re-included. It is pure Python, so the same
  project ships the same files with or without git, inside a repository or not, whatever
  the machine's global excludes.

The packages dbt installed are shipped, because a worker cannot be assumed to reach the
package hub or a ``local:`` package's path: each package in the install path goes under it
by its name, filtered by the same rule (so a package's own ``.git``, ``target/``,
``logs/``, ``profiles.yml``, nested ``dbt_packages/`` and ignored files stay behind). A
package installed as a symlink (``local:``) ships its files, not the link.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence
from pathlib import Path

import yaml
from pathspec.patterns import GitWildMatchPattern

# Left out at every root, before and whatever any .gitignore says.
_NEVER_SHIPPED = (".env", ".env.*", "profiles.yml", ".git", ".venv/", "__pycache__/", "*.duckdb", "*.duckdb.wal")
# The directories dbt_project.yml may rename, with dbt's defaults.
_PROJECT_PATHS = (("target-path", "target"), ("log-path", "logs"), ("packages-install-path", "dbt_packages"))

_Patterns = list[GitWildMatchPattern]


def _patterns(lines: Sequence[str]) -> _Patterns:
    return [p for p in (GitWildMatchPattern(line) for line in lines) if p.include is not None]


def _ignored(path: str, layers: Sequence[tuple[str, _Patterns]]) -> bool:
    """Whether git would ignore `path` (relative, "/"-terminated for a folder) under these
    .gitignore layers, outermost first; the last matching pattern decides."""
    ignored = False
    for base, patterns in layers:
        if not path.startswith(base):
            continue
        relative = path[len(base) :]
        for pattern in patterns:
            if pattern.match_file(relative) is not None:
                ignored = bool(pattern.include)
    return ignored


def _project_paths(project_dir: Path) -> dict[str, str]:
    try:
        config = yaml.safe_load((project_dir / "dbt_project.yml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    found = {}
    for key, default in _PROJECT_PATHS:
        value = config.get(key, default) if isinstance(config, dict) else default
        found[key] = str(value).strip("/") if isinstance(value, str) and value.strip("/") else default
    return found


def shipped_files(project_dir: Path) -> list[tuple[Path, str]]:
    """Every file ``ship_project`` packs, as (path on disk, path in the archive), in archive order."""
    project_dir = Path(project_dir)
    paths = _project_paths(project_dir)
    anchored = [f"/{paths[key]}/" for key, _ in _PROJECT_PATHS]
    found: list[tuple[Path, str]] = []
    _walk(project_dir, "", _patterns([*_NEVER_SHIPPED, *anchored]), [], found, (), "")
    install = project_dir / paths["packages-install-path"]
    if not Path(paths["packages-install-path"]).is_absolute() and install.is_dir():
        never = _patterns(_NEVER_SHIPPED + ("/target/", "/logs/", "/dbt_packages/"))
        for package in sorted(install.iterdir(), key=lambda p: p.name):
            if package.is_dir() and not package.name.startswith("."):
                prefix = f"{paths['packages-install-path']}/{package.name}/"
                # A package that holds the project (`local: ../`) does not ship it again.
                _walk(package, "", never, [], found, (project_dir.resolve(),), prefix)
    return found


def _walk(
    directory: Path,
    relative: str,
    never: _Patterns,
    layers: list[tuple[str, _Patterns]],
    found: list[tuple[Path, str]],
    inside: tuple[Path, ...],
    prefix: str,
) -> None:
    # A link back to a folder this walk is inside (dbt's link for `local: ../`) would loop.
    # A folder reached twice by other paths (a package inside the project, installed as a
    # link too) ships under each path: the worker needs the package where dbt installed it.
    real = directory.resolve()
    if real in inside:
        return
    inside = (*inside, real)
    gitignore = directory / ".gitignore"
    if gitignore.is_file():
        lines = gitignore.read_text(encoding="utf-8", errors="replace").splitlines()
        layers = [*layers, (relative, _patterns(lines))]
    for child in sorted(directory.iterdir(), key=lambda p: p.name):
        is_dir = child.is_dir()
        path = f"{relative}{child.name}/" if is_dir else f"{relative}{child.name}"
        if _ignored(path, [("", never)]) or _ignored(path, layers):
            continue
        if is_dir:
            _walk(child, path, never, layers, found, inside, prefix)
        elif child.is_file():
            found.append((child, prefix + path))


def pack_project(project_dir: Path) -> bytes:
    """The project (and its installed packages) as a .tar.gz, for workers without a shared path."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as archive:
        for path, name in shipped_files(project_dir):
            with open(path, "rb") as handle:
                info = archive.gettarinfo(arcname=name, fileobj=handle)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                archive.addfile(info, handle)
    return buffer.getvalue()
