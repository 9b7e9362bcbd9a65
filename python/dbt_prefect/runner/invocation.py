"""What every dbt invocation in this process shares: the lock, the checks before dbt
starts, the scrubbing of secrets, dbt's exceptions in dbt-prefect's terms, and what runs
after dbt returned without ever replacing its outcome.

Used by the runner, the orchestrator's planning and its workers, and the CLI.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from dbt_prefect.errors import (
    DbtArgumentsError,
    DbtCommandFailed,
    DbtPrefectError,
    DbtProfilesError,
    DbtProjectNotFound,
    DbtWarehouseLocked,
)
from dbt_prefect.runner.args import DbtInvocation

# dbt keeps process-wide state (its flags, adapter registry, event manager and invocation
# id), so two dbt invocations cannot safely overlap in one process. Runners in different
# threads take turns; each still sees only its own task runs and logs.
DBT_INVOCATION_LOCK = threading.RLock()

Scrub = Callable[[str], str]

_logger = logging.getLogger("dbt_prefect")


def check_project(project_dir: Path) -> None:
    """DbtProjectNotFound unless ``project_dir`` is a dbt project."""
    if not project_dir.is_dir():
        raise DbtProjectNotFound(
            f"dbt project directory {project_dir} does not exist "
            "(set DBT_PROJECT_DIR, PrefectDbtSettings(project_dir=...) or --project-dir)"
        )
    if not (project_dir / "dbt_project.yml").is_file():
        raise DbtProjectNotFound(
            f"no dbt_project.yml in {project_dir} "
            "(set DBT_PROJECT_DIR, PrefectDbtSettings(project_dir=...) or --project-dir to your dbt project)"
        )


def scrubber(secret_values: Iterable[str]) -> Scrub:
    """A function that masks every secret value in a text, longest first."""
    secrets = sorted((s for s in secret_values if s), key=len, reverse=True)
    if not secrets:
        return lambda text: text

    def scrub(text: str) -> str:
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, "*****")
        return text

    return scrub


def translate_dbt_exception(
    exc: BaseException, invocation: DbtInvocation, project_dir: Path, profiles_dir: Path
) -> DbtPrefectError:
    """dbt's exception as a dbt-prefect error whose message names the fix."""
    text = str(exc).strip()
    kind = type(exc).__name__
    if "Could not set lock" in text:
        return DbtWarehouseLocked(
            f"the DuckDB database is locked by another process: {text} "
            "(close the other connection, e.g. a DuckDB shell or another dbt run, "
            "or point the profile's `path` at another file)"
        )
    if kind == "DbtUsageException" or kind.endswith("UsageError"):
        return DbtArgumentsError(
            f"dbt cannot run {list(invocation.args)!r}: {text} "
            f"(check the arguments with `dbt {invocation.command} --help`)"
        )
    if kind == "DbtProfileError" or "profile" in kind.lower():
        return DbtProfilesError(
            f"{text}\n(profiles.yml read from {profiles_dir}; fix the profile or target, "
            "or pass --target / --profiles-dir, DBT_PROFILES_DIR, PrefectDbtSettings(profiles_dir=...))"
        )
    return DbtCommandFailed(f"dbt command '{invocation.command}' failed: {kind}: {text}")


def run_after_dbt(steps: list[Callable[[], None]]) -> None:
    """Run what follows dbt. Nothing here replaces dbt's result or dbt's exception: an
    error is logged; an interrupt while dbt's own exception is on its way is logged too."""
    dbt_exception = sys.exc_info()[1]
    for step in steps:
        try:
            step()
        except Exception as exc:
            _logger.warning("dbt-prefect could not finish recording the run: %s: %s", type(exc).__name__, exc)
        except BaseException as exc:
            if dbt_exception is None:
                raise
            _logger.warning("dbt-prefect stopped recording the run (%s) while dbt raised", type(exc).__name__)
