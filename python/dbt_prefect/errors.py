"""The exceptions dbt-prefect raises. Each message names what is wrong and how to fix it."""

from __future__ import annotations


class DbtPrefectError(Exception):
    """Base class for every error dbt-prefect raises on purpose."""


class DbtProjectNotFound(DbtPrefectError):
    """The project directory is missing or has no dbt_project.yml."""


class DbtProfilesError(DbtPrefectError):
    """profiles.yml is missing, unreadable, invalid or lacks the requested profile/target."""


class DbtArgumentsError(DbtPrefectError):
    """The arguments given to invoke() are not a dbt command dbt understands."""


class DbtWarehouseLocked(DbtPrefectError):
    """The DuckDB database file is held by another process."""


class ProfileTemplateError(DbtProfilesError):
    """A `{{ prefect.* }}` placeholder in profiles.yml cannot be resolved."""


class DbtCommandFailed(DbtPrefectError):
    """dbt raised or could not start; the message is dbt's own."""


class PrefectDbtRunnerFailure(DbtPrefectError):
    """One or more dbt nodes failed; the message lists every failed node."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class OrchestratorUsageError(DbtPrefectError):
    """PrefectDbtOrchestrator was called in a way it cannot work."""
