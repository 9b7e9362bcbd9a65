"""Run dbt Core under Prefect: every dbt node a Prefect task run, every relation an asset.

dbt imports every installed top-level module whose name starts with ``dbt_`` while it
looks for plugins, so this module is imported inside every dbt invocation. It must stay
cheap and free of side effects: everything is imported lazily on first attribute access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_LAZY_EXPORTS = {
    "PrefectDbtRunner": "dbt_prefect.runner.runner",
    "PrefectDbtOrchestrator": "dbt_prefect.orchestrator.orchestrator",
    "ExecutionMode": "dbt_prefect.orchestrator.options",
    "TestStrategy": "dbt_prefect.orchestrator.options",
    "CacheConfig": "dbt_prefect.orchestrator.options",
    "BuildPlan": "dbt_prefect.orchestrator.plan",
    "BuildResult": "dbt_prefect.orchestrator.results",
    "PrefectDbtSettings": "dbt_prefect.settings",
    "DbtPrefectTranslator": "dbt_prefect.model.translator",
    "DbtHookContext": "dbt_prefect.runner.hooks",
    "DbtNode": "dbt_prefect.model.nodes",
    "DbtPrefectError": "dbt_prefect.errors",
    "DbtProjectNotFound": "dbt_prefect.errors",
    "DbtProfilesError": "dbt_prefect.errors",
    "DbtArgumentsError": "dbt_prefect.errors",
    "DbtWarehouseLocked": "dbt_prefect.errors",
    "DbtCommandFailed": "dbt_prefect.errors",
    "ProfileTemplateError": "dbt_prefect.errors",
    "StateStoreError": "dbt_prefect.errors",
    "PrefectDbtRunnerFailure": "dbt_prefect.errors",
    "OrchestratorUsageError": "dbt_prefect.errors",
    "DbtBuildFailed": "dbt_prefect.errors",
}

__all__ = [*_LAZY_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from dbt_prefect.errors import (  # noqa: F401
        DbtArgumentsError,
        DbtBuildFailed,
        DbtCommandFailed,
        DbtPrefectError,
        DbtProfilesError,
        DbtProjectNotFound,
        DbtWarehouseLocked,
        OrchestratorUsageError,
        PrefectDbtRunnerFailure,
        ProfileTemplateError,
        StateStoreError,
    )
    from dbt_prefect.model.nodes import DbtNode  # noqa: F401
    from dbt_prefect.model.translator import DbtPrefectTranslator  # noqa: F401
    from dbt_prefect.orchestrator.options import CacheConfig, ExecutionMode, TestStrategy  # noqa: F401
    from dbt_prefect.orchestrator.orchestrator import PrefectDbtOrchestrator  # noqa: F401
    from dbt_prefect.orchestrator.plan import BuildPlan  # noqa: F401
    from dbt_prefect.orchestrator.results import BuildResult  # noqa: F401
    from dbt_prefect.runner.hooks import DbtHookContext  # noqa: F401
    from dbt_prefect.runner.runner import PrefectDbtRunner  # noqa: F401
    from dbt_prefect.settings import PrefectDbtSettings  # noqa: F401


def __getattr__(name: str) -> Any:
    if name == "plugins":
        # Looked up by dbt's plugin manager, which has already imported dbt itself.
        from dbt_prefect._compat.dbt_plugin import ManifestCapturePlugin

        return [ManifestCapturePlugin]
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'dbt_prefect' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
