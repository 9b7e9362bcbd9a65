"""A node task that Dask runs again after a worker died: a lost attempt, or a lost result.

When a Dask worker process dies, the scheduler runs again every task it was running (up
to ``distributed.scheduler.allowed-failures`` times, 3 by default, whatever the task's
``retries``) and every finished task whose result lived only on that worker. Prefect does
not see why: the new execution starts the same task run afresh, with ``run_count`` 1.

So each execution of a node notes its worker process, and its outcome when it ends, in
the Dask scheduler's metadata under the task run's id. A new execution then knows:

- an earlier execution finished (only its result was lost): the node is not run again,
  and the task run ends with that outcome;
- earlier executions from other processes did not finish: they were attempts lost with
  their worker. They are taken from the task's retries and added to its run count, so the
  node runs again only while ``retries`` allows, and its task run says how many attempts
  it took.

Outside a Dask worker nothing is recorded.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from typing import Any

from dbt_prefect.orchestrator.warm_project import worker_name

_logger = logging.getLogger("dbt_prefect")
_METADATA_KEY = "dbt-prefect-node-executions"


@dataclass(frozen=True)
class EarlierExecutions:
    finished: Any = None  # the NodeOutcome of an execution that finished
    refusal: str | None = None  # why the node must not run again: every attempt is spent


def _dask_client() -> Any:
    """The Dask client of this worker, or None outside a Dask worker."""
    try:
        from distributed import get_client, get_worker

        get_worker()
        return get_client()
    except (ImportError, ValueError):
        return None


def _task_run() -> Any:
    from prefect.context import TaskRunContext

    return TaskRunContext.get()


def earlier_executions() -> EarlierExecutions:
    """In a node task: what earlier executions of this task run did (see the module)."""
    context = _task_run()
    client = _dask_client()
    if context is None or client is None:
        return EarlierExecutions()
    key = [_METADATA_KEY, str(context.task_run.id)]
    me = worker_name()
    try:
        record = dict(client.get_metadata(key, default={}))
        started = list(record.get("started", []))
        if me in started:  # a Prefect retry within this execution
            return EarlierExecutions()
        client.set_metadata([*key, "started"], [*started, me])
    except Exception as exc:  # the scheduler cannot answer: Dask's own behaviour
        _logger.warning("dbt-prefect: could not read this node's earlier executions on Dask: %s", exc)
        return EarlierExecutions()
    if record.get("finished"):
        return EarlierExecutions(finished=pickle.loads(record["finished"]))
    if not started:
        return EarlierExecutions()
    return EarlierExecutions(refusal=_spend(context, started))


def _spend(context: Any, lost: list[str]) -> str | None:
    from prefect.logging import get_run_logger

    retries = context.task.retries or 0
    context.task_run.run_count += len(lost)
    # The engine retries while its count of retries is below task.retries; this
    # execution's Task is its own copy, unpickled on this worker.
    context.task.retries = max(0, retries - len(lost))
    workers = ", ".join(lost)
    if len(lost) > retries:
        return (
            f"the Dask worker running this node died ({workers}), and retries={retries} allows no "
            f"attempt after {len(lost)} lost"
        )
    get_run_logger().warning(
        "The Dask worker running this node died (%s); this is attempt %d of %d", workers, len(lost) + 1, retries + 1
    )
    return None


def record_finished(outcome: Any) -> None:
    """Keep this execution's NodeOutcome (pickled: the workers run the same code), for an
    execution that runs again only because the result was lost with its worker."""
    context = _task_run()
    client = _dask_client()
    if context is None or client is None:
        return
    try:
        client.set_metadata([_METADATA_KEY, str(context.task_run.id), "finished"], pickle.dumps(outcome))
    except Exception as exc:
        _logger.warning("dbt-prefect: could not record this node's outcome on Dask: %s", exc)


def _forget(dask_scheduler: Any, task_run_ids: list[str]) -> None:
    records = dask_scheduler.task_metadata.get(_METADATA_KEY)
    if isinstance(records, dict):
        for task_run_id in task_run_ids:
            records.pop(task_run_id, None)


def forget_executions(client: Any, task_run_ids: list[Any]) -> None:
    """After a build, in the flow: drop its nodes' records from the scheduler's metadata."""
    try:
        client.run_on_scheduler(_forget, task_run_ids=[str(i) for i in task_run_ids])
    except Exception as exc:  # a scheduler that went away keeps nothing
        _logger.debug("dbt-prefect: could not drop the node records on the Dask scheduler: %s", exc)
