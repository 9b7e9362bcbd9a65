"""PrefectDbtRunner: dbtRunner, with every node mirrored in Prefect as it runs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from dbt.cli.main import dbtRunner, dbtRunnerResult
from google.protobuf.json_format import MessageToDict
from prefect.client.orchestration import SyncPrefectClient
from prefect.states import State

from dbt_prefect._compat.dbt import duckdb_file_released, install_fast_cycle_check
from dbt_prefect._compat.dbt_plugin import capture_manifest
from dbt_prefect.delivery import Outbox, deliver, open_outbox, routed
from dbt_prefect.errors import DbtCommandFailed
from dbt_prefect.model.levels import python_level, to_dbt_level
from dbt_prefect.model.nodes import FinishedNode, NodeCatalog
from dbt_prefect.model.translator import DbtPrefectTranslator
from dbt_prefect.profiles.resolve import ResolvedProfiles, resolved_profiles
from dbt_prefect.runner.args import DbtInvocation, parse_invocation
from dbt_prefect.runner.asset_events import AssetEmitter
from dbt_prefect.runner.cancellation import dbt_cancels_on_interrupt
from dbt_prefect.runner.changed import ChangedBuild, check_request
from dbt_prefect.runner.events import DbtEventRouter
from dbt_prefect.runner.failures import OperationErrors, node_results, result_message, summarise_failures
from dbt_prefect.runner.heap import freeze_what_exists_now, long_lived_objects_frozen
from dbt_prefect.runner.hooks import HookRegistration, InvocationHooks, LifecycleHooks
from dbt_prefect.runner.invocation import (
    DBT_INVOCATION_LOCK,
    check_project,
    run_after_dbt,
    scrubber,
    translate_dbt_exception,
)
from dbt_prefect.runner.parse_ahead import parsed_without_json, writes_no_json
from dbt_prefect.runner.readback import wait_until_recorded
from dbt_prefect.runner.recorder import RunRecorder
from dbt_prefect.runner.report import RunReport, project_name, publish_run_report
from dbt_prefect.runner.state_store import StateStore, resolve_state_store
from dbt_prefect.runner.target import RunTarget, run_logger
from dbt_prefect.settings import PrefectDbtSettings

_logger = logging.getLogger("dbt_prefect")

# Commands that run without a dbt project directory.
_NO_PROJECT_COMMANDS = frozenset({"init"})
# Commands that run without reading profiles.yml.
_NO_PROFILE_COMMANDS = frozenset({"init", "deps", "clean"})

# Flags dbt-prefect resolves itself and hands to dbt as kwargs.
_MANAGED_FLAGS = ("--project-dir", "--profiles-dir", "--target-path", "--log-level")


class PrefectDbtRunner(HookRegistration):
    """Run dbt commands with each executed node reflected as a Prefect task run.

    The arguments of ``invoke`` are dbtRunner's. Inside a flow or task, every node dbt
    executes becomes a task run whose state follows the node's status, with the node's
    logs; seeds, models and snapshots become Prefect assets.

    ``invoke(["build", ...], only_changed=True)`` builds only what changed since the
    state kept in ``state_store``: a local directory, a Prefect filesystem block slug
    ("local-file-system/dbt-state"), a WritableFileSystem block or a ResultStore
    (see runner/changed.py).
    """

    def __init__(
        self,
        manifest: Any = None,
        settings: PrefectDbtSettings | None = None,
        raise_on_failure: bool = True,
        client: Any = None,
        include_compiled_code: bool = False,
        disable_assets: bool = False,
        create_summary_artifact: bool = True,
        translator: DbtPrefectTranslator | None = None,
        state_store: Any = None,
    ) -> None:
        self.manifest = manifest
        self.settings = settings if settings is not None else PrefectDbtSettings()
        self.raise_on_failure = raise_on_failure
        self.client = client
        self.include_compiled_code = include_compiled_code
        self.disable_assets = disable_assets
        # Publish the run report artifacts (report.py) at the end of every invoke in a flow.
        self.create_summary_artifact = create_summary_artifact
        # Task-run names, asset keys and properties, materialization metadata (translator.py).
        self.translator = translator if translator is not None else DbtPrefectTranslator()
        # Where invoke(..., only_changed=True) keeps the last build's artifacts (state_store.py).
        self.state_store = state_store
        # How long invoke() waits for the server to show every task run it recorded.
        self.record_timeout_seconds = 60.0
        # The last invoke's recorder and run report, for the CLI's summary.
        self.last_recorder: RunRecorder | None = None
        self.last_report: RunReport | None = None
        # Lifecycle hooks (@runner.on_run_start, @runner.post_model, @runner.on_run_end).
        self.hooks = LifecycleHooks()

    # -- public ----------------------------------------------------------------------
    def invoke(self, args: Sequence[str], **kwargs: Any) -> Any:
        """Run ``dbt <args>`` and return dbt's ``dbtRunnerResult``.

        ``only_changed=True`` (build only) selects what changed since the stored state."""
        only_changed = bool(kwargs.pop("only_changed", False))
        invocation = parse_invocation(args)
        # Absolute for dbt: a relative path would be stored in the partial parse and in
        # each seed's root_path, which dbt-duckdb then reads against the working directory.
        project_dir = Path(invocation.given("project_dir", kwargs) or self.settings.project_dir).expanduser().absolute()
        profiles_dir = Path(invocation.given("profiles_dir", kwargs) or self.settings.profiles_dir).expanduser()
        target_path = invocation.given("target_path", kwargs) or self.settings.given_target_path
        dbt_level = to_dbt_level(invocation.given("log_level", kwargs) or self.settings.log_level)

        top_command = invocation.command.split(" ")[0]
        if top_command not in _NO_PROJECT_COMMANDS:
            check_project(project_dir)
        store = None
        if only_changed:
            check_request(invocation, kwargs, self.state_store)
            store = resolve_state_store(self.state_store, project_name(project_dir))
        operation_errors = None
        if invocation.command == "run-operation":
            # run-operation's result names no node; keep dbt's error line for the summary.
            operation_errors = OperationErrors()
            kwargs = {**kwargs, "callbacks": [*(kwargs.get("callbacks") or []), operation_errors]}

        hooks = InvocationHooks(self.hooks, self, invocation.command, invocation.args) if self.hooks else None
        # What is left once dbt returned (delivery, readback, the run report): done after
        # the process-wide dbt lock is released, so another invocation need not wait on the API.
        after_dbt: list[Callable[[], None]] = []
        try:
            install_fast_cycle_check()
            with DBT_INVOCATION_LOCK, duckdb_file_released():
                if top_command in _NO_PROFILE_COMMANDS:
                    result = self._run_dbt(
                        invocation,
                        kwargs,
                        project_dir,
                        profiles_dir,
                        target_path,
                        dbt_level,
                        None,
                        hooks,
                        after_dbt,
                        store,
                    )
                else:
                    with resolved_profiles(profiles_dir, client=_sync_client_or_none(self.client)) as profiles:
                        result = self._run_dbt(
                            invocation,
                            kwargs,
                            project_dir,
                            profiles.profiles_dir,
                            target_path,
                            dbt_level,
                            profiles,
                            hooks,
                            after_dbt,
                            store,
                        )
        finally:
            run_after_dbt(after_dbt)
        if hooks is not None:
            hooks.finish(result, node_results(result))
        return self._outcome(invocation, result, project_dir, profiles_dir, operation_errors)

    # -- internals -------------------------------------------------------------------
    def _run_dbt(
        self,
        invocation: DbtInvocation,
        kwargs: dict[str, Any],
        project_dir: Path,
        profiles_dir: Path,
        target_path: Any,
        dbt_level: str,
        profiles: ResolvedProfiles | None,
        hooks: InvocationHooks | None,
        after_dbt: list[Callable[[], None]],
        store: StateStore | None = None,
    ) -> dbtRunnerResult | None:
        target = RunTarget.current()
        threshold = max(python_level(dbt_level), _prefect_threshold(target))
        scrub = scrubber(profiles.secret_values if profiles is not None else ())
        paths = ["--project-dir", str(project_dir), "--profiles-dir", str(profiles_dir)]
        if target_path is not None:
            paths += ["--target-path", str(target_path)]
        changed = None
        if store is not None:
            # Source freshness and the selection of what changed (changed.py): a parse and
            # the stored artifacts, as many objects as the build's, so the collector skips
            # what exists before them too (heap.py).
            with long_lived_objects_frozen():
                changed = ChangedBuild.prepare(store, invocation, kwargs, paths, _sayer(target))
        manifest = self.manifest
        if manifest is None and changed is not None:
            manifest = changed.manifest  # parsed for source freshness; dbt builds on it
        if manifest is None and target is not None and writes_no_json(invocation, kwargs):
            manifest = parsed_without_json(invocation, kwargs, project_dir, profiles_dir, target_path)
        catalog = NodeCatalog(manifest, self.translator)
        emitter = None
        if target is not None and not self.disable_assets:
            emitter = AssetEmitter(
                catalog,
                include_compiled_code=self.include_compiled_code,
                scrub=scrub,
                hold_until_dbt_returns=invocation.fails_fast(kwargs),
            )
        recorder = RunRecorder(
            target=target,
            catalog=catalog,
            threshold=threshold,
            scrub=scrub,
            on_node_finished=node_finished_listener(emitter, hooks, catalog),
        )
        # Paths go on the command line: dbt validates its path defaults while parsing,
        # before kwargs apply. Kwargs keep the last word, as in dbtRunner.
        dbt_args = invocation.args_without(_MANAGED_FLAGS) + paths
        dbt_kwargs = {k: v for k, v in kwargs.items() if k not in ("project_dir", "profiles_dir", "target_path")}
        user_callbacks = list(dbt_kwargs.pop("callbacks", None) or [])
        # dbt's own console output would repeat every line Prefect's loggers print.
        dbt_kwargs["log_level"] = "none"
        if "log_level_file" not in kwargs and not any(a.startswith("--log-level-file") for a in dbt_args):
            # Otherwise dbt derives the file level from "none" and stops writing logs/dbt.log.
            dbt_kwargs["log_level_file"] = "debug"
        if changed is not None:
            dbt_kwargs.update(changed.dbt_kwargs())
            user_callbacks.append(changed.artifacts)

        result = None
        dbt_raised = False
        outbox = open_outbox(target is not None)
        with routed(outbox):
            recorder.start()
            try:
                with (
                    long_lived_objects_frozen(),
                    capture_manifest(hooks.selectors if hooks is not None else (), freeze_what_exists_now) as slot,
                ):
                    catalog.manifest_source = slot
                    if hooks is not None:
                        hooks.start(slot.selected, lambda: catalog.manifest)
                    runner = dbtRunner(
                        manifest=manifest,
                        callbacks=[DbtEventRouter(recorder.forward, threshold), *user_callbacks],
                    )
                    with dbt_cancels_on_interrupt(), changed.state_read_once() if changed else nullcontext():
                        result = runner.invoke(dbt_args, **dbt_kwargs)
            except BaseException:
                dbt_raised = True
                raise
            finally:
                finished_result = result
                # Whatever happens below, what was recorded is delivered.
                after_dbt.append(
                    lambda: self._deliver(outbox, recorder, emitter, invocation, project_dir, scrub, finished_result)
                )
                self.last_recorder = recorder
                try:
                    recorder.stop()
                    if hooks is not None:
                        hooks.models_done()
                    if result is not None and getattr(result, "exception", None) is not None:
                        dbt_raised = True
                    recorder.reconcile(_reported_statuses(result), dbt_raised=dbt_raised)
                    if emitter is not None:
                        emitter.release()
                    if changed is not None:
                        with long_lived_objects_frozen():  # it reads the manifest dbt wrote: as many objects again
                            changed.finish(result, dbt_raised)
                except Exception as exc:  # never in place of dbt's own result or exception
                    _logger.warning("dbt-prefect could not close the run's records: %s: %s", type(exc).__name__, exc)
        return result

    def _deliver(
        self,
        outbox: Outbox | None,
        recorder: RunRecorder,
        emitter: AssetEmitter | None,
        invocation: DbtInvocation,
        project_dir: Path,
        scrub: Callable[[str], str],
        result: Any,
    ) -> None:
        """Deliver what the run recorded, read it back, and publish the run report."""
        self.last_report = None
        if recorder.target is None:
            return
        delivered = deliver(outbox, self.record_timeout_seconds)
        if delivered:
            # Task runs are read back; events the outbox delivered are the server's to store
            # (in batches, every 5 s by default): invoke does not wait on that.
            event_ids = emitter.event_ids if emitter is not None and outbox is None else []
            wait_until_recorded(recorder.task_run_ids, event_ids, self.record_timeout_seconds, flush=outbox is None)
        # -- run report artifact (report.py); never raises ----------------------------
        if self.create_summary_artifact:
            self.last_report = publish_run_report(
                recorder,
                command=invocation.command,
                args=invocation.args,
                project_dir=project_dir,
                with_asset_keys=not self.disable_assets,
                scrub=scrub,
                client=_sync_client_or_none(self.client),
                dbt_result=result,
                publish_to_api=delivered,
            )

    def _outcome(
        self, invocation: DbtInvocation, result: Any, project_dir: Path, profiles_dir: Path, operation_errors: Any
    ) -> Any:
        exception = getattr(result, "exception", None)
        if exception is not None and not isinstance(exception, Exception):
            # KeyboardInterrupt, SystemExit, Prefect's TerminationSignal: not dbt errors;
            # they keep their type so the flow run ends as cancelled or crashed.
            raise exception
        if exception is not None:
            raise translate_dbt_exception(exception, invocation, project_dir, profiles_dir) from None
        if not getattr(result, "success", False) and self.raise_on_failure:
            failure = summarise_failures(invocation.command, result, operation_errors, invocation.operation_name)
            if failure is not None:
                raise failure
            raise DbtCommandFailed(f"dbt command '{invocation.command}' did not succeed; dbt's log above says why")
        return result


def node_finished_listener(
    emitter: AssetEmitter | None, hooks: InvocationHooks | None, catalog: NodeCatalog
) -> Callable[[FinishedNode, State | None], None] | None:
    """What the recorder calls when a node finished: asset events, then post_model hooks."""
    if hooks is None:
        return emitter.node_finished if emitter is not None else None

    def node_finished(finished: FinishedNode, state: State | None) -> None:
        if emitter is not None:
            emitter.node_finished(finished, state)
        hooks.node_finished(
            catalog.manifest_entry(finished.node.unique_id),
            finished.status,
            finished.message,
            lambda: {
                # A node the orchestrator skipped before dbt saw it has neither.
                "node_info": MessageToDict(finished.node_info, preserving_proto_field_name=True)
                if finished.node_info is not None
                else {},
                "run_result": MessageToDict(finished.run_result, preserving_proto_field_name=True)
                if finished.run_result is not None
                else {"status": finished.status, "message": finished.message},
            },
        )

    return node_finished


def _sayer(target: RunTarget | None) -> Callable[[int, str], None]:
    """Log a line of only_changed's to the run's Prefect logger and to ``dbt_prefect``."""
    run_log, extra = run_logger(target)

    def say(level: int, message: str) -> None:
        _logger.log(level, message)
        run_log.log(level, message, extra=extra)

    return say


def _sync_client_or_none(client: Any) -> Any:
    # The official signature takes a PrefectClient; only a synchronous one can be used
    # from invoke(), which is synchronous. Otherwise a client is opened when needed.
    return client if isinstance(client, SyncPrefectClient) else None


def _prefect_threshold(target: Any) -> int:
    name = "prefect.flow_runs" if target is not None else "prefect.dbt"
    return logging.getLogger(name).getEffectiveLevel()


def _reported_statuses(result: Any) -> dict[str, tuple[str, str]]:
    statuses: dict[str, tuple[str, str]] = {}
    for entry in node_results(result):
        node = getattr(entry, "node", None)
        unique_id = getattr(node, "unique_id", None)
        if unique_id:
            status = getattr(entry, "status", "")
            statuses[unique_id] = (str(getattr(status, "value", status)), result_message(entry))
    return statuses
