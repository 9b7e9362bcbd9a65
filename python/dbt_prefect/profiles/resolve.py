"""profiles.yml templating: resolve `{{ prefect.blocks... }}` / `{{ prefect.variables... }}`.

Placeholders are resolved at run time, before dbt reads profiles.yml:

    {{ prefect.blocks.<block-type-slug>.<block-document-name>[.<field>|[<index>]]... }}
    {{ prefect.variables.<name>[.<key>|[<index>]]... }}

Everything else in profiles.yml (dbt's own `{{ env_var(...) }}`, `{{ var(...) }}`, ...) is
left untouched for dbt to render.

Secret handling: a *string* that came from a block is never written to disk. It is
replaced with `{{ env_var('DBT_ENV_SECRET_PREFECT_<N>') }}` and its value is returned
separately, to be set in the environment only while dbt runs; dbt scrubs the values of
`DBT_ENV_SECRET_*` variables from its logs and errors. Non-string scalars from blocks
(ints, floats, bools, nulls) are inlined. Variable values are not secret and are inlined.

This module imports Prefect (and httpx) lazily, inside the functions that talk to Prefect:
dbt imports every `dbt_*` module at startup, and a profiles.yml without placeholders must
cost nothing. It is the package's entry point and re-exports the error types.
"""

from __future__ import annotations

import inspect
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import yaml

from dbt_prefect.errors import DbtProfilesError
from dbt_prefect.profiles.placeholders import (
    MalformedPlaceholderError,
    PrefectApiUnreachableError,
    UnknownBlockError,
    UnknownFieldError,
    UnknownVariableError,
    has_prefect_placeholders,
    tree_has_placeholders,
)
from dbt_prefect.profiles.rendering import SECRET_ENV_PREFIX, render_tree, type_name
from dbt_prefect.profiles.resolver import (
    BlockDocumentNotFound,
    BlockTypeNotFound,
    PrefectApiError,
    Resolver,
    VariableNotFound,
)

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

__all__ = [
    "BlockDocumentNotFound",
    "BlockTypeNotFound",
    "MalformedPlaceholderError",
    "PrefectApiError",
    "PrefectApiUnreachableError",
    "PrefectResolver",
    "ResolvedProfiles",
    "Resolver",
    "SECRET_ENV_PREFIX",
    "UnknownBlockError",
    "UnknownFieldError",
    "UnknownVariableError",
    "VariableNotFound",
    "has_prefect_placeholders",
    "load_profiles_yaml",
    "render_profiles_text",
    "resolved_profiles",
]

PROFILES_FILE = "profiles.yml"

_P = ParamSpec("_P")
_T = TypeVar("_T")


# --------------------------------------------------------------------------------------
# Public types
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedProfiles:
    """What the runner passes to dbt."""

    profiles_dir: Path  # dir to pass to dbt as --profiles-dir
    secret_env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Every non-empty secret value, for scrubbing logs (empty without placeholders).
    secret_values: frozenset[str] = frozenset()
    # True when profiles_dir is a rendered temporary copy, False when it is the original.
    templated: bool = False


@contextmanager
def temporary_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set `values` in os.environ for the duration, then restore exactly what was there."""
    previous = {name: os.environ.get(name) for name in values}
    try:
        os.environ.update(values)
        yield
    finally:
        for name, old in previous.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _profiles_path(profiles_dir: Path | str) -> Path:
    return Path(profiles_dir).expanduser() / PROFILES_FILE


def _read_profiles_text(profiles_dir: Path | str) -> str:
    directory = Path(profiles_dir).expanduser()
    path = directory / PROFILES_FILE
    if directory.is_file():
        raise DbtProfilesError(
            f"profiles.yml not found in {directory}: that is a file, not a directory "
            f"(set DBT_PROFILES_DIR or PrefectDbtSettings(profiles_dir=...) to the "
            f"directory that contains profiles.yml)"
        )
    if not path.is_file():
        raise DbtProfilesError(
            f"profiles.yml not found in {directory} (set DBT_PROFILES_DIR or PrefectDbtSettings(profiles_dir=...))"
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DbtProfilesError(
            f"profiles.yml at {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise DbtProfilesError(
            f"profiles.yml at {path} cannot be read ({exc.strerror or exc}); check its permissions"
        ) from None


# Any: parsed YAML of no fixed shape, which callers index into.
def _parse_profiles_text(text: str, path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # Never use str(exc): PyYAML quotes the offending line, which may hold a secret.
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or type(exc).__name__
        location = f"line {mark.line + 1}: " if mark is not None else ""
        hint = "fix the YAML syntax"
        if mark is not None:
            lines = text.splitlines()
            if 0 <= mark.line < len(lines) and "{{" in lines[mark.line]:
                hint = 'quote values that contain {{ ... }}, e.g. target: "{{ prefect.variables.target }}"'
        raise DbtProfilesError(f"profiles.yml at {path} is not valid YAML: {location}{problem} ({hint})") from None
    if data is None:
        raise DbtProfilesError(
            f"profiles.yml at {path} is empty; define at least one profile "
            f"(<profile-name>: {{target: ..., outputs: {{...}}}})"
        )
    if not isinstance(data, dict):
        raise DbtProfilesError(
            f"profiles.yml at {path} must be a mapping of profile names to profiles, not a {type_name(data)}"
        )
    return data


def load_profiles_yaml(profiles_dir: Path | str) -> dict[str, Any]:
    """Read and parse `<profiles_dir>/profiles.yml` (placeholders are NOT resolved).

    Raises DbtProfilesError naming the path and the fix when the file is missing,
    unreadable, not valid YAML or not a mapping.
    """
    text = _read_profiles_text(profiles_dir)
    return _parse_profiles_text(text, _profiles_path(profiles_dir))


def render_profiles_text(
    text: str,
    *,
    source_path: Path,
    resolver: Resolver,
    env_var_names: Iterator[str] | None = None,
) -> tuple[str, dict[str, str]]:
    """Resolve the `{{ prefect.* }}` placeholders in profiles.yml text.

    Returns the rendered YAML text (no secret values in it) and the secret environment
    (env var name -> value) that dbt needs to render it. `resolver` has
    `.block(type_slug, name) -> data` and `.variable(name) -> value`; each block and
    variable is read at most once per call. Text without placeholders is returned as-is.
    `env_var_names` overrides the secret env var names (default
    DBT_ENV_SECRET_PREFECT_1, _2, ...).
    """
    source_path = Path(source_path)
    if not has_prefect_placeholders(text):
        return text, {}
    tree = _parse_profiles_text(text, source_path)
    if not tree_has_placeholders(tree):  # only in comments
        return text, {}
    return render_tree(tree, source_path, resolver, env_var_names)


# --------------------------------------------------------------------------------------
# Prefect client resolver
# --------------------------------------------------------------------------------------


class PrefectResolver:
    """Reads blocks and variables through a synchronous Prefect client."""

    def __init__(self, client: SyncPrefectClient) -> None:
        self._client = client

    def describe_api(self) -> str:
        server_type = getattr(self._client, "server_type", None)
        if getattr(server_type, "value", server_type) == "EPHEMERAL":
            return "a temporary local Prefect server (PREFECT_API_URL is not set)"
        api_url = str(getattr(self._client, "api_url", "") or "").rstrip("/")
        return f"the Prefect API at {api_url}" if api_url else "the Prefect API"

    def _call(self, method: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        import httpx  # lazy: only needed to talk to Prefect, and slow to import

        try:
            result = method(*args, **kwargs)
        except httpx.TransportError as exc:
            raise PrefectApiError(
                f"cannot reach {self.describe_api()} ({type(exc).__name__}: {exc}); "
                f"profiles.yml has Prefect placeholders, so a Prefect server must be "
                f"reachable to resolve them",
                unreachable=True,
            ) from None
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            if status in (401, 403):
                detail = "check PREFECT_API_KEY and PREFECT_API_URL"
            else:
                detail = "check the server's logs"
            raise PrefectApiError(f"{self.describe_api()} answered HTTP {status} ({detail})") from None
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if close is not None:
                close()
            raise TypeError(
                "resolved_profiles(client=...) needs a synchronous Prefect client: "
                "prefect.client.orchestration.get_client(sync_client=True)"
            )
        return result

    def block(self, type_slug: str, name: str) -> Mapping[str, object]:
        from prefect.exceptions import ObjectNotFound  # lazy: see the module docstring

        try:
            document = self._call(
                self._client.read_block_document_by_name,
                name=name,
                block_type_slug=type_slug,
                include_secrets=True,
            )
        except ObjectNotFound:
            pass
        else:
            return document.data or {}
        # Not found: tell an unknown type from an unknown name (error path only).
        try:
            self._call(self._client.read_block_type_by_slug, slug=type_slug)
        except ObjectNotFound:
            raise BlockTypeNotFound(type_slug, where=self.describe_api()) from None
        available: list[str] | None
        try:
            documents = self._call(
                self._client.read_block_documents_by_type,
                block_type_slug=type_slug,
                include_secrets=False,
            )
            available = sorted(d.name for d in documents if d.name and not d.is_anonymous)
        except (ObjectNotFound, PrefectApiError):
            available = None
        raise BlockDocumentNotFound(type_slug, name, available=available, where=self.describe_api())

    def variable(self, name: str) -> object:
        variable = self._call(self._client.read_variable_by_name, name=name)
        if variable is None:
            raise VariableNotFound(name, where=self.describe_api())
        return variable.value


class _LazyClientResolver:
    """Opens the sync Prefect client on first use only."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack
        self._resolver: PrefectResolver | None = None

    def _get(self) -> PrefectResolver:
        if self._resolver is None:
            # Lazy: see the module docstring.
            from prefect.client.orchestration import get_client

            try:
                client = self._stack.enter_context(get_client(sync_client=True))
            except (ValueError, RuntimeError) as exc:
                # e.g. no PREFECT_API_URL with ephemeral mode disabled.
                raise PrefectApiError(f"cannot connect to a Prefect API: {exc}", unreachable=True) from None
            self._resolver = PrefectResolver(client)
        return self._resolver

    def block(self, type_slug: str, name: str) -> Mapping[str, object]:
        return self._get().block(type_slug, name)

    def variable(self, name: str) -> object:
        return self._get().variable(name)


# Process-wide counter, so that concurrent resolutions never share an env var name.
_ENV_COUNTER = itertools.count(1)
_ENV_COUNTER_LOCK = threading.Lock()


def _process_unique_env_names() -> Iterator[str]:
    while True:
        with _ENV_COUNTER_LOCK:
            n = next(_ENV_COUNTER)
        yield f"{SECRET_ENV_PREFIX}{n}"


@contextmanager
def resolved_profiles(
    profiles_dir: Path | str, *, client: SyncPrefectClient | None = None
) -> Iterator[ResolvedProfiles]:
    """Resolve profiles.yml placeholders for the duration of a dbt run.

    Without placeholders: yields `profiles_dir` as-is, no env, and never contacts Prefect.
    With placeholders: reads each block/variable once (through `client`, a sync Prefect
    client, or `get_client(sync_client=True)`), writes the rendered profiles.yml (no secret
    values in it) to a private temporary directory (0700, file 0600), sets the secret env
    vars in os.environ, and on exit restores os.environ and deletes the directory.
    """
    profiles_dir = Path(profiles_dir).expanduser()
    source_path = profiles_dir / PROFILES_FILE
    text = _read_profiles_text(profiles_dir)
    # Parsing a profiles.yml takes well under a millisecond; doing it here turns a YAML
    # mistake into a clear error before dbt starts, placeholders or not.
    tree = _parse_profiles_text(text, source_path)
    if not has_prefect_placeholders(text):
        yield ResolvedProfiles(profiles_dir)
        return
    if not tree_has_placeholders(tree):
        yield ResolvedProfiles(profiles_dir)
        return

    with ExitStack() as stack:
        resolver: Resolver = PrefectResolver(client) if client is not None else _LazyClientResolver(stack)
        rendered, secret_env = render_tree(tree, source_path, resolver, _process_unique_env_names())
    # The client is closed before dbt starts.

    tmpdir = Path(tempfile.mkdtemp(prefix="dbt-prefect-profiles-"))
    try:
        os.chmod(tmpdir, 0o700)
        fd = os.open(tmpdir / PROFILES_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(rendered)
        with temporary_environ(secret_env):
            yield ResolvedProfiles(
                profiles_dir=tmpdir,
                secret_env=MappingProxyType(dict(secret_env)),
                secret_values=frozenset(v for v in secret_env.values() if v),
                templated=True,
            )
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
