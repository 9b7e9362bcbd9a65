"""`dbt build` of a dbt project as a Prefect flow, for deployments.

Written by `dbt-prefect init` (and served as it is by `dbt-prefect serve`); it is yours to
edit. Every dbt node becomes a Prefect task run, and seeds, models and snapshots become
Prefect assets.

    python flows/<this file>                 # one build, here and now
    prefect deploy --all                     # the deployments of prefect.yaml

The parameters are the ones people change per run; the Prefect UI shows them as a form
in a deployment's custom run. What stays the same from run to run comes from the
environment, which a deployment sets in prefect.yaml's `job_variables.env`:

- DBT_PROJECT_DIR: the dbt project (default: PROJECT_DIR below);
- DBT_PROFILES_DIR: the folder of profiles.yml (default: the project's folder when it
  holds one, else ~/.dbt). profiles.yml may read Prefect blocks and variables;
- DBT_PREFECT_STATE_STORE: where `only_changed` keeps the last build's state, a folder or
  a block slug such as `local-file-system/dbt-state`;
- DASK_SCHEDULER_ADDRESS: with `mode="per_node"`, run the nodes on this Dask cluster
  (`pip install "dbt-prefect[distributed]"`); unset, they run in the flow's process.
"""

# No `from __future__ import annotations`: Prefect validates the parameters against these
# annotations in the run's own process, where a served flow arrives pickled.
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from prefect import flow

from dbt_prefect import ExecutionMode, PrefectDbtOrchestrator, PrefectDbtRunner, PrefectDbtSettings

FLOW_NAME = "dbt"
PROJECT_DIR = Path(__file__).resolve().parent


def _task_runner() -> Any:
    """A Dask cluster's task runner when DASK_SCHEDULER_ADDRESS is set; else Prefect's default."""
    address = os.environ.get("DASK_SCHEDULER_ADDRESS")
    if not address:
        return None
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=address)


def _settings() -> PrefectDbtSettings:
    project = Path(os.environ.get("DBT_PROJECT_DIR") or PROJECT_DIR)
    given: dict[str, Any] = {"project_dir": project}
    if not os.environ.get("DBT_PROFILES_DIR") and (project / "profiles.yml").is_file():
        given["profiles_dir"] = project
    return PrefectDbtSettings(**given)


def _packages_missing(project: Path) -> bool:
    """Packages are declared but not installed, as in a fresh clone of the repository."""
    if not any((project / name).is_file() for name in ("packages.yml", "dependencies.yml")):
        return False
    config = yaml.safe_load((project / "dbt_project.yml").read_text()) or {}
    installed = project / str(config.get("packages-install-path") or "dbt_packages")
    return not (installed.is_dir() and any(installed.iterdir()))


@flow(name=FLOW_NAME, task_runner=_task_runner())
def dbt_build(
    select: str | None = None,
    exclude: str | None = None,
    full_refresh: bool = False,
    target: str | None = None,
    vars: dict[str, Any] | None = None,
    only_changed: bool = False,
    mode: Literal["runner", "per_wave", "per_node"] = "runner",
    dbt_args: list[str] | None = None,
) -> None:
    """`dbt build` of the dbt project: every node a task run, every relation an asset.

    Args:
        select: dbt's --select, e.g. "orders+" for the model orders and everything below it. Empty: the whole project.
        exclude: dbt's --exclude, e.g. "tag:slow".
        full_refresh: Rebuild incremental models and seeds from scratch (--full-refresh).
        target: The profiles.yml target to build in. Empty: the profile's default target.
        vars: dbt's --vars, as a mapping, e.g. {"start_date": "2024-01-01"}.
        only_changed: Build only what changed since the last build, kept in DBT_PREFECT_STATE_STORE (mode "runner").
        mode: "runner": one dbt build, its nodes mirrored as task runs. "per_wave" or "per_node": Prefect runs the DAG, a wave or a node at a time (PrefectDbtOrchestrator).
        dbt_args: More dbt build flags, e.g. ["--threads", "8"] or ["--fail-fast"].
    """
    if only_changed and mode != "runner":
        raise ValueError(
            f'only_changed=True works with mode="runner" (dbt\'s state selection); mode={mode!r} has no such '
            'selection. Use mode="runner", or only_changed=False.'
        )
    settings = _settings()
    if _packages_missing(Path(settings.project_dir)):
        PrefectDbtRunner(settings=settings).invoke(["deps"])
    if mode == "runner":
        args = ["build"]
        if select:
            args += ["--select", *select.split()]
        if exclude:
            args += ["--exclude", *exclude.split()]
        if full_refresh:
            args.append("--full-refresh")
        if target:
            args += ["--target", target]
        if vars:
            args += ["--vars", json.dumps(vars)]
        args += dbt_args or []
        runner = PrefectDbtRunner(settings=settings, state_store=os.environ.get("DBT_PREFECT_STATE_STORE") or None)
        runner.invoke(args, only_changed=only_changed)
        return
    orchestrator = PrefectDbtOrchestrator(
        settings=settings,
        execution_mode=ExecutionMode(mode),
        # Dask workers on other machines get the project's files with the node tasks.
        ship_project=mode == "per_node" and bool(os.environ.get("DASK_SCHEDULER_ADDRESS")),
    )
    orchestrator.run_build(
        select=select,
        exclude=exclude,
        full_refresh=full_refresh,
        target=target,
        extra_cli_args=dbt_args,
        vars=vars,
    )


if __name__ == "__main__":
    dbt_build()
