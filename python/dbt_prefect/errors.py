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


class StateStoreError(DbtPrefectError):
    """``only_changed`` was asked for without a usable state store, or for a command it cannot narrow."""


class PrefectDbtRunnerFailure(DbtPrefectError):
    """One or more dbt nodes failed; the message lists every failed node."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class OrchestratorUsageError(DbtPrefectError, ValueError):
    """PrefectDbtOrchestrator was called in a way it cannot work.

    A ValueError too, as the official orchestrator raises for the same mistakes."""


class DbtBuildFailed(PrefectDbtRunnerFailure, RuntimeError):
    """An orchestrated build in which one or more nodes ended in error.

    Raised by ``run_build`` (with ``raise_on_failure=True``) after the summary artifact
    and run_results.json are written. ``results`` is the results dict run_build would
    have returned; ``failed_node_ids`` and ``skipped_node_ids`` list its entries in
    error and skipped.
    """

    def __init__(self, results: dict, summary: str = "") -> None:
        # Imported here: this module stays importable without Prefect's import cost.
        from dbt_prefect.model.statuses import ERROR, SKIPPED

        self.results = results
        self.failed_node_ids = [uid for uid, r in results.items() if isinstance(r, dict) and r.get("status") == ERROR]
        self.skipped_node_ids = [
            uid for uid, r in results.items() if isinstance(r, dict) and r.get("status") == SKIPPED
        ]
        shown = ", ".join(self.failed_node_ids[:5]) + (", ..." if len(self.failed_node_ids) > 5 else "")
        # Only a project hook failed: no node to name, the summary below says which hook.
        headline = f"dbt build failed for {len(self.failed_node_ids)} node(s): {shown}" if shown else "dbt build failed"
        super().__init__(f"{headline}\n{summary}" if summary else headline, results)
