"""The orchestrator's warm per-node dbt session (dbt-core internals, checked against 1.10
and 1.11): ``NodeSession`` keeps dbt's set-up (flags, runtime config, adapter, connection)
per project and process, and runs a node as ``GraphRunnableTask.call_runner`` does. When
it cannot be set up, callers fall back to ``dbtRunner``; the internals are imported where
used, so a dbt version that moved one turns into that fallback (WarmPathUnavailable).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any


class WarmPathUnavailable(Exception):
    """The warm path cannot run here (a dbt version it does not know, a node type it does not run)."""


class _EventForwarder:
    """The one dbt event callback of warm sessions: forwards to the node running now.

    dbt's event manager is process-wide and its set-up opens dbt.log, so it is set up once
    (and again only after something else, e.g. a runner invocation, replaced it); the
    node's own listener is swapped in and out around each node. Nodes take turns on the
    process-wide dbt lock, so one slot is enough.
    """

    def __init__(self) -> None:
        self.target: Callable[[Any], None] | None = None
        self.flags: Any = None  # the Flags the event manager was set up with

    def __call__(self, msg: Any) -> None:
        target = self.target
        if target is not None:
            target(msg)


_FORWARDER = _EventForwarder()


class NodeSession:
    """One warm dbt session for one project in this process: dbt's set-up done once.

    What ``dbt build`` does once per command and the session keeps: the global Flags (one
    per full_refresh value), the RuntimeConfig (profile, project, vars, target), a
    BuildTask (for its runner types and ``call_runner``, which fires NodeStart and
    NodeFinished and turns exceptions into an error RunResult), and the adapter with its
    macro resolver, query header and open connection.

    What it skips that a one-node ``dbt build`` pays every time: click parsing, flag
    resolution, profile/project loading, adapter registration, the graph compilation
    of the whole manifest and the selector, the per-command event logger set-up.

    dbt internals used (checked against dbt-core 1.10 and 1.11):
      - ``dbt.cli.flags.Flags``/``args_to_context``, ``dbt.flags.set_flags``: the global
        flags the runners read (``get_flags().FULL_REFRESH``, ``INTROSPECT``, ...);
      - ``dbt.config.runtime.load_profile``/``load_project``, ``RuntimeConfig.from_parts``,
        as ``dbt.cli.requires`` builds them;
      - ``dbt.adapters.factory.FACTORY.adapters``: dbt keeps one adapter per adapter type
        per process; the session owns its adapter and puts it there only while one of its
        nodes runs, so two projects with different credentials in one process never share
        an adapter, and a runner invocation in between registers its own;
      - ``BuildTask.get_runner_type``/``call_runner``, the node runner classes' constructor;
      - the adapter's connection manager ``release``/``_rollback_handle`` (kept open,
        below) and its relation cache ``adapter.cache``;
      - ``dbt_common.context.set_invocation_context``, ``reset_invocation_id`` and
        ``dbt.events.logging.setup_event_logger``, as ``dbt.cli.requires.preflight`` does.

    The connection: dbt closes a node's connection when the node ends (``release``); the
    session instead rolls back whatever the node left uncommitted and keeps it open, so
    the next node on this thread skips the connect and authentication. After a node
    ends in error the connection is closed for real, so a retry starts clean.

    The relation cache: dbt fills it once per command and trusts it, because one process
    makes every change. Here other workers change the database between two nodes of this
    worker, including relations of nodes that run here (PostgreSQL's ``drop ... cascade``
    of a replaced parent view drops its child views), so the cache is emptied before
    every node and refilled with the node's own schema as it is now (``_refresh_cache``).
    Schemas are created once per build (``build_id``), as dbt's create_schemas does once
    per command.
    """

    def __init__(self, args: Sequence[str], manifest: Any) -> None:
        # Imports first: an unknown dbt version fails here, and the caller falls back.
        from dbt.adapters.factory import FACTORY  # noqa: F401
        from dbt.task.build import BuildTask  # noqa: F401

        self.args = list(args)
        self.manifest = manifest
        self._variants: dict[bool, tuple[Any, Any, Any]] = {}
        self.adapter: Any = None
        self.build_id: str | None = None
        self._schemas_ready: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._open()

    # -- set-up, once ---------------------------------------------------------------
    def _open(self) -> None:
        from dbt.adapters.factory import get_adapter, register_adapter
        from dbt.context.providers import generate_runtime_macro_context
        from dbt.context.query_header import generate_query_header_context
        from dbt.mp_context import get_mp_context

        flags, config, _ = self._variant(False)
        saved = self._take_registered(config.credentials.type)
        try:
            # dbt's own registration (plugin loading included), then the adapter is ours.
            register_adapter(config, get_mp_context())
            adapter = get_adapter(config)
        finally:
            self._restore_registered(config.credentials.type, saved)
        adapter.set_macro_context_generator(generate_runtime_macro_context)
        adapter.set_macro_resolver(self.manifest)
        adapter.connections.set_query_header(generate_query_header_context(adapter.config, self.manifest))
        _keep_connections_open(adapter)
        self.adapter = adapter

    def _variant(self, full_refresh: bool) -> tuple[Any, Any, Any]:
        """(Flags, RuntimeConfig, BuildTask) for `dbt build [--full-refresh]`, built once each."""
        found = self._variants.get(full_refresh)
        if found is not None:
            return found
        from dbt.cli.flags import Flags, args_to_context
        from dbt.config.runtime import RuntimeConfig, load_profile, load_project
        from dbt.flags import set_flags
        from dbt.task.build import BuildTask

        self._set_invocation_env()
        flags = Flags(args_to_context(["build", *self.args, *(["--full-refresh"] if full_refresh else [])]))
        set_flags(flags)
        profile = load_profile(
            flags.PROJECT_DIR, flags.VARS, flags.PROFILE, flags.TARGET, getattr(flags, "THREADS", None)
        )
        project = load_project(flags.PROJECT_DIR, flags.VERSION_CHECK, profile, flags.VARS, validate=True)
        config = RuntimeConfig.from_parts(project, profile, flags)
        task = BuildTask(flags, config, self.manifest)
        self._variants[full_refresh] = (flags, config, task)
        return flags, config, task

    @staticmethod
    def _take_registered(adapter_type: str) -> Any:
        from dbt.adapters.factory import FACTORY

        with FACTORY.lock:
            return FACTORY.adapters.pop(adapter_type, None)

    @staticmethod
    def _restore_registered(adapter_type: str, previous: Any) -> None:
        from dbt.adapters.factory import FACTORY

        with FACTORY.lock:
            FACTORY.adapters.pop(adapter_type, None)
            if previous is not None:
                FACTORY.adapters[adapter_type] = previous

    @contextmanager
    def _registered(self) -> Iterator[None]:
        """This session's adapter is the process's adapter of its type while a node runs."""
        from dbt.adapters.factory import FACTORY

        adapter_type = self.adapter.config.credentials.type
        with FACTORY.lock:
            previous = FACTORY.adapters.get(adapter_type)
            FACTORY.adapters[adapter_type] = self.adapter
        try:
            yield
        finally:
            with FACTORY.lock:
                if previous is None:
                    FACTORY.adapters.pop(adapter_type, None)
                else:
                    FACTORY.adapters[adapter_type] = previous

    # -- per node -------------------------------------------------------------------
    @staticmethod
    def _set_invocation_env() -> None:
        # As dbt's preflight: env_var() reads this copy of os.environ (secrets set now).
        from dbt_common.context import set_invocation_context
        from dbt_common.invocation import reset_invocation_id

        set_invocation_context(dict(os.environ))
        reset_invocation_id()

    @staticmethod
    def _route_events(flags: Any) -> None:
        from dbt.events.logging import setup_event_logger
        from dbt_common.events.event_manager_client import get_event_manager

        manager = get_event_manager()
        if _FORWARDER.flags is flags and _FORWARDER in manager.callbacks:
            return
        setup_event_logger(flags, callbacks=[_FORWARDER])
        _FORWARDER.flags = flags

    def node(self, unique_id: str) -> Any:
        # Exposures and saved queries too: dbt build runs them with its no-op runner.
        for collection in ("nodes", "unit_tests", "exposures", "saved_queries"):
            node = getattr(self.manifest, collection, {}).get(unique_id)
            if node is not None:
                return node
        return None

    def check_supported(self, unique_id: str) -> None:
        """Raise WarmPathUnavailable for nodes the session does not run (microbatch models)."""
        from dbt.task.run import MicrobatchModelRunner

        node = self.node(unique_id)
        if node is None:
            raise WarmPathUnavailable(f"{unique_id} is not in the parsed manifest")
        _, _, task = self._variant(False)
        runner_type = task.get_runner_type(node)
        if runner_type is None or (isinstance(runner_type, type) and issubclass(runner_type, MicrobatchModelRunner)):
            # Microbatch models run their batches on the task's thread pool.
            raise WarmPathUnavailable(
                f"{unique_id} needs dbt's own build task ({getattr(runner_type, '__name__', None)})"
            )

    def run_node(
        self, unique_id: str, full_refresh: bool, build_id: str | None, listener: Callable[[Any], None]
    ) -> Any:
        """Run one node as `dbt build` would; return dbt's RunResult. Call with the dbt lock held."""
        from dbt.artifacts.schemas.results import NodeStatus
        from dbt.flags import set_flags
        from dbt_common.context import get_invocation_context

        flags, config, task = self._variant(full_refresh)
        set_flags(flags)
        self._set_invocation_env()
        get_invocation_context().uses_adapter(config.credentials.type)
        self._route_events(flags)
        self._start_build(build_id)
        node = self.node(unique_id)
        _FORWARDER.target = listener
        try:
            with self._registered():
                self._ensure_schema(config, node)
                self._refresh_cache(config, node)
                runner = task.get_runner_type(node)(config, self.adapter, node, 1, 1)
                result = task.call_runner(runner)
                task._raise_next_tick = None  # fail-fast bookkeeping of a multi-node run
        finally:
            _FORWARDER.target = None
        if result.status == NodeStatus.Error:
            self._reset_connection()
        return result

    def run_hooks(
        self, hook_type: str, hook_nodes: dict[str, Any], results: Sequence[Any], listener: Callable[[Any], None]
    ) -> list[Any]:
        """Run the project's on-run-start or on-run-end hooks as ``dbt build`` does; return their RunResults.

        ``hook_nodes`` are kept out of the worker's manifest (so that the dbtRunner fallback
        never runs them with a node) and put back for this call only. ``results`` are the
        RunResults an on-run-end hook reads as ``results`` (see ``run_result``). dbt
        internals: ``GraphRunnableTask.safe_run_hooks`` and the context ``RunTask.after_run``
        gives on-run-end hooks. Call with the dbt lock held.
        """
        from dbt.flags import set_flags
        from dbt.node_types import RunHookType
        from dbt_common.context import get_invocation_context

        flags, config, task = self._variant(False)
        set_flags(flags)
        self._set_invocation_env()
        get_invocation_context().uses_adapter(config.credentials.type)
        self._route_events(flags)
        start = hook_type == "on-run-start"
        extra = {} if start else _end_hook_context(results)
        self.manifest.nodes.update(hook_nodes)
        ran_before = len(task.node_results)
        _FORWARDER.target = listener
        try:
            with self._registered():
                with self.adapter.connection_named("master"):
                    task.safe_run_hooks(self.adapter, RunHookType.Start if start else RunHookType.End, extra)
        finally:
            _FORWARDER.target = None
            for unique_id in hook_nodes:
                self.manifest.nodes.pop(unique_id, None)
        ran = list(task.node_results[ran_before:])
        del task.node_results[ran_before:]
        return ran

    def _start_build(self, build_id: str | None) -> None:
        # Other workers changed the database since this worker's last node: see the class doc.
        self.adapter.cache.clear()
        if build_id is not None and build_id == self.build_id:
            return
        self.build_id = build_id
        self._schemas_ready.clear()

    def _refresh_cache(self, config: Any, node: Any) -> None:
        """Fill the relation cache with the node's schema as it is now, with one query.

        What dbt's cache population does once per command, for the one schema this node
        writes, but without ``RelationsCache.add``: it fires a debug event per relation,
        which costs more than the listing itself (tens of ms for a schema of 200
        relations). The relations go in through ``RelationsCache._setdefault``, dbt's own
        insert. Relations of other schemas are listed by dbt itself if the node asks.
        """
        if not getattr(node, "is_relational", False) or getattr(node, "is_ephemeral", False):
            return
        from dbt.adapters.cache import _CachedRelation

        schema_relation = self.adapter.Relation.create_from(config, node).without_identifier()
        if schema_relation.schema is None:
            return
        with self.adapter.connection_named("master"):
            listed = self.adapter.list_relations_without_caching(schema_relation)
        cache = self.adapter.cache
        with cache.lock:
            cache.add_schema(schema_relation.database, schema_relation.schema)
            for relation in listed:
                cache._setdefault(_CachedRelation(relation))

    def _ensure_schema(self, config: Any, node: Any) -> None:
        """Create the node's schema when missing, once per build, as dbt's create_schemas does."""
        if not getattr(node, "is_relational", False) or getattr(node, "is_ephemeral", False):
            return
        relation = self.adapter.Relation.create_from(config, node).without_identifier()
        if relation.schema is None:
            return
        key = (str(relation.database or "").lower(), relation.schema.lower())
        if key in self._schemas_ready:
            return
        if not self._schema_exists(relation):
            try:
                with self.adapter.connection_named("master"):
                    self.adapter.create_schema(relation)
            except Exception:
                # Another worker created it at the same moment: PostgreSQL reports a unique
                # violation even for `create schema if not exists`. Only a missing schema is an error.
                if not self._schema_exists(relation):
                    raise
        self._schemas_ready.add(key)

    def _schema_exists(self, relation: Any) -> bool:
        database = relation.include(database=True, schema=False, identifier=False)
        with self.adapter.connection_named("master"):
            existing = self.adapter.list_schemas(str(database) if relation.database else None)
        return relation.schema.lower() in {name.lower() for name in existing if name}

    def _reset_connection(self) -> None:
        """After an error: close this thread's connection for real and forget the schemas seen."""
        manager = self.adapter.connections
        try:
            _close_connection(manager)
        finally:
            self.adapter.cache.clear()
            self._schemas_ready.clear()

    def close(self) -> None:
        try:
            self.adapter.cleanup_connections()
        except Exception:  # closing a connection the server already dropped
            pass


def _end_hook_context(results: Sequence[Any]) -> dict[str, Any]:
    # What RunTask.after_run gives on-run-end hooks, from the nodes' results.
    from dbt.artifacts.schemas.results import NodeStatus

    failed = (NodeStatus.Error, NodeStatus.Fail, NodeStatus.Skipped)
    built = {
        (r.node.database, r.node.schema)
        for r in results
        if getattr(r.node, "is_relational", False) and r.status not in failed
    }
    return {"schemas": list({schema for _, schema in built}), "results": list(results), "database_schemas": list(built)}


def _keep_connections_open(adapter: Any) -> None:
    """Make ``release`` (called by dbt when a node's connection scope ends) keep it open.

    It rolls back what the node left uncommitted, as dbt's close does, and keeps the
    handle: the next node on this thread reuses it (``set_connection_name`` reuses an
    open connection of the thread and only renames it). Temporary objects and session
    settings of a node live on until the connection closes, as in any pooled connection.
    """
    manager = adapter.connections

    def release() -> None:
        connection = manager.get_if_exists()
        if connection is None or connection.state != "open":
            return
        # Always roll back: the driver may hold a transaction dbt did not mark as open.
        type(manager)._rollback_handle(connection)
        connection.transaction_open = False

    manager.release = release


def _close_connection(manager: Any) -> None:
    connection = manager.get_if_exists()
    if connection is None:
        return
    try:
        type(manager).close(connection)
    except Exception:
        manager.clear_thread_connection()
