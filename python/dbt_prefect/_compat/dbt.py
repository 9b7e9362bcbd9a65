"""The only place dbt-prefect touches dbt-core internals. Checked against dbt-core 1.10 and 1.11.

Everything here uses names that are not part of dbt's documented programmatic API
(``dbtRunner``); each function or class says why it is needed. They are imported where
they are used, so that a dbt version that moved one fails only the feature that needs it. If an import fails (a dbt
version that moved something), callers fall back to ``dbtRunner``: see ``NodeSession``.

Why it is needed:
- ``env_var()`` in dbt's Jinja reads the environment dbt copied when the invocation
  started (``dbt_common.context.InvocationContext.env``), not ``os.environ``. The run
  history macro asks the runner for the run's task-run ids halfway through the run (see
  events.py), so the answer has to go into that copy. It is set from dbt's own thread,
  inside the macro's ``log()`` call, and disappears with the invocation.
- ``forget_compilation`` and ``run_result`` let a warm worker run a node again and hand
  on-run-end hooks the results dbt would have built. The warm session itself is in
  dbt_session.py.
- ``install_fast_cycle_check`` makes dbt's check that the graph has no cycle linear:
  dbt-core 1.10 and 1.11 look for a cycle with networkx's ``find_cycle``, which took 10 s
  on a graph of 6,672 nodes, in every command that compiles the graph (``build``,
  ``ls``); ``is_directed_acyclic_graph`` answers the same question in 10 ms. On a cycle,
  dbt's own search runs and names it, as before.
- ``wave_builds_on`` spares the ``dbt build`` of each wave of a per-wave build the graph
  compilation, the node-by-node selection, the plugin discovery and the filling of the
  relation cache, the same in every wave, and builds each wave's subgraph in time that
  does not grow with the project (``subset_graph``).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any


def set_invocation_env_var(name: str, value: str) -> None:
    from dbt_common.context import get_invocation_context

    context = get_invocation_context()
    env = context.env
    if isinstance(env, MutableMapping):
        env[name] = value
    else:  # a read-only mapping (dbt's case-insensitive one on Windows): replace it
        context._env = {**env, name: value}


def forget_compilation(manifest: Any, unique_id: str) -> None:
    """Make dbt compile the node (and the ephemeral models it inlines) afresh.

    dbt compiles into the Manifest's node objects and marks ephemeral CTEs as injected;
    a second run on the same Manifest (a retry, the next build on a warm worker)
    re-renders the SQL but skips the injection, and the SQL names a CTE it no longer
    defines. Node attributes ``compiled``, ``extra_ctes_injected``, ``extra_ctes`` and
    ``_pre_injected_sql`` are dbt internals.
    """
    pending = [unique_id]
    seen: set[str] = set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        node = manifest.nodes.get(current)
        if node is None or resource_type(node) == "seed" or not hasattr(node, "extra_ctes_injected"):
            continue
        node.compiled = False
        node.compiled_code = None
        node.extra_ctes_injected = False
        node.extra_ctes = []
        if hasattr(node, "_pre_injected_sql"):
            node._pre_injected_sql = None
        for parent_id in getattr(getattr(node, "depends_on", None), "nodes", None) or ():
            parent = manifest.nodes.get(parent_id)
            if parent is not None and getattr(getattr(parent, "config", None), "materialized", None) == "ephemeral":
                pending.append(parent_id)


def resource_type(entry: Any) -> str:
    value = getattr(entry, "resource_type", "")
    return str(getattr(value, "value", value))


def run_result(node: Any, status: str, message: str, execution_time: float) -> Any:
    """A dbt RunResult for a node the orchestrator ran, as on-run-end hooks expect in ``results``."""
    from dbt.artifacts.schemas.results import RunStatus, TestStatus
    from dbt.artifacts.schemas.run import RunResult

    # A test's verdict (pass, warn, fail) is a TestStatus; anything else a RunStatus.
    status_type = TestStatus if status in {s.value for s in TestStatus} - {s.value for s in RunStatus} else RunStatus
    return RunResult(
        status=status_type(status),
        timing=[],
        thread_id="dbt-prefect-orchestrator",
        execution_time=execution_time,
        adapter_response={},
        message=message,
        failures=None,
        node=node,
    )


def install_fast_cycle_check() -> None:
    """Process-wide and idempotent: dbt answers exactly as before, only sooner."""
    from dbt.compilation import Linker

    original = Linker.find_cycles
    if getattr(original, "dbt_prefect_fast", False):
        return

    def find_cycles(linker: Any) -> str | None:
        import networkx

        if networkx.is_directed_acyclic_graph(linker.graph):
            return None
        return original(linker)

    find_cycles.dbt_prefect_fast = True  # type: ignore[attr-defined]
    Linker.find_cycles = find_cycles  # type: ignore[method-assign]


def depth_levels(graph: Any) -> dict[Any, int]:
    """Each node's depth in a DAG: 0 for a node without parents, else one more than its
    deepest parent. A node's ancestors are all at lower depths."""
    import networkx

    return {node: depth for depth, nodes in enumerate(networkx.topological_generations(graph)) for node in nodes}


def subset_graph(graph: Any, levels: dict[Any, int], selected: Iterable[Any]) -> Any:
    """What dbt's ``Graph.get_subset_graph`` returns, as a networkx DiGraph: the selected
    nodes, with an edge a -> b wherever a path leads from a to b through unselected nodes
    only (a direct edge keeps its attributes). None when a selected node is not in the
    graph (dbt's own method then raises its error).

    dbt's method copies the whole graph and strips it a layer at a time, which costs the
    size of the project times its depth for every command. Here the search follows paths
    from the selected nodes only while they can still reach one: a node as deep as the
    deepest selected node cannot (``levels``: ``depth_levels`` of the graph). A wave of a
    per-wave build spans one or two depths, so the search stays within the wave's
    neighbourhood.
    """
    import networkx

    chosen = set(selected)
    if any(node not in levels for node in chosen):
        return None
    deepest = max((levels[node] for node in chosen), default=0)
    subset = networkx.DiGraph()
    subset.add_nodes_from((node, graph.nodes[node]) for node in chosen)
    for origin in chosen:
        seen: set[Any] = set()
        pending = []
        for child in graph.successors(origin):
            if child in chosen:
                subset.add_edge(origin, child, **graph.edges[origin, child])
                seen.add(child)
            else:
                pending.append(child)
        while pending:
            node = pending.pop()
            if node in seen:
                continue
            seen.add(node)
            if node in chosen:
                subset.add_edge(origin, node)
            elif levels[node] < deepest:  # deeper nodes reach no selected node
                pending.extend(graph.successors(node))
    return subset


class WaveSelectors:
    """Which nodes of the manifest a full fqn names alone, for the waves' ``--select``."""

    def __init__(self, by_fqn: dict[str, list[str]]) -> None:
        self._by_fqn = by_fqn

    def fqn_alone(self, entry: Any) -> str | None:
        """``fqn:<its fqn>`` when no other node has that fqn, else None (add its resource type).

        Under ``wave_builds_on`` a full fqn is looked up, not matched as a prefix, so it
        names the one node. The resource type costs a pass over the whole project for
        every node of every wave in dbt's selection, so it is added only where needed.
        """
        fqn = ".".join(entry.fqn)
        return f"fqn:{fqn}" if len(self._by_fqn.get(fqn, ())) == 1 else None


@contextmanager
def wave_builds_on(manifest: Any) -> Iterator[WaveSelectors]:
    """While held, the ``dbt build`` of each wave on this manifest skips costs of dbt's
    per-command set-up that are the same in every wave, about 0.3 s a wave at 200 models:

    - the graph: the first build compiles it (link every node, add the test edges with a
      BFS per test, write graph_summary.json, log the project's counts); the others reuse
      it. Keyed by the manifest's node ids, so a wave that leaves the project hooks out
      gets its own. dbt internal: ``BuildTask.compile_manifest``, which sets ``task.graph``.
    - the selection: a wave selects its nodes by their full ``fqn`` (``WaveSelectors``),
      and dbt's fqn method compares each selector with every node. A full fqn is looked up
      instead; anything else goes to dbt's own method. dbt also lists every node of the
      project once per selector (``Graph.nodes`` of its selection graph): the list is
      made once per selection graph. dbt internals: ``QualifiedNameSelectorMethod.search``,
      ``NodeSelector.graph`` (a subgraph view of the compiled graph), ``Graph.nodes``.
    - the plugin discovery: every command lists every installed module to find those named
      ``dbt_*`` (about 40 ms); the first wave's list serves the others. dbt internal:
      ``PluginManager.get_prefixed_modules``.
    - the profile and the project: every command reads and renders profiles.yml and
      dbt_project.yml again; the first wave's serve the others, loaded with the same
      arguments. dbt internals: ``dbt.cli.requires.load_profile`` and ``load_project``.
    - the schemas: every command lists the schemas of its nodes and creates the missing
      ones; a schema an earlier wave listed or created is not listed again. dbt internal:
      ``RunTask.create_schemas``.
    - the wave's subgraph: dbt copies the whole graph and strips it a layer at a time
      (29 ms a wave at 1,335 nodes, growing with depth too); ``subset_graph`` gives the
      same graph from the wave's neighbourhood. dbt internal: ``Graph.get_subset_graph``,
      replaced for the graphs compiled here only.
    - the relation cache: every command gets a new adapter, and dbt fills its cache by
      listing every relation of every schema the project writes, a cost that grows with
      the project. The first wave fills it; each later wave's adapter gets that same
      cache, which dbt has kept up to date as the nodes built, as within one ``dbt
      build``. dbt internals: ``GraphRunnableTask.populate_adapter_cache`` and the
      adapter's ``cache`` (a ``RelationsCache``).

    Checked against dbt-core 1.10 and 1.11. Hold DBT_INVOCATION_LOCK: the patches are
    process-wide.
    """
    import dbt.cli.requires as requires
    from dbt.flags import get_flags
    from dbt.graph.graph import Graph
    from dbt.graph.selector_methods import QualifiedNameSelectorMethod
    from dbt.plugins.manager import PluginManager
    from dbt.task.build import BuildTask

    original_load_profile, original_load_project = requires.load_profile, requires.load_project
    loaded: dict[tuple[Any, ...], Any] = {}
    original_create_schemas = BuildTask.create_schemas
    own_create_schemas = "create_schemas" in BuildTask.__dict__
    known_schemas: set[tuple[str, str]] = set()  # (database, schema), lower case
    original_populate = BuildTask.populate_adapter_cache
    own_populate = "populate_adapter_cache" in BuildTask.__dict__  # else inherited: deleted again after
    relations: list[Any] = []  # the first wave's adapter's cache, once filled
    original_compile = BuildTask.compile_manifest
    original_search = QualifiedNameSelectorMethod.search
    # The classmethod itself, to put back as it was; a dbt without it keeps its discovery.
    original_prefixed_modules = PluginManager.__dict__.get("get_prefixed_modules")
    discovered_modules: dict[str, Any] = {}
    graphs: dict[frozenset[str], Any] = {}
    levels_of: dict[int, dict[Any, int]] = {}  # id of a compiled networkx graph -> depth_levels
    original_subset = Graph.get_subset_graph
    original_nodes = Graph.nodes
    node_lists: weakref.WeakKeyDictionary[Any, frozenset[Any]] = weakref.WeakKeyDictionary()
    by_fqn: dict[str, list[str]] = {}
    for collection in (manifest.nodes, manifest.unit_tests, manifest.exposures, manifest.saved_queries):
        for unique_id, node in collection.items():
            by_fqn.setdefault(".".join(node.fqn), []).append(unique_id)

    def compile_manifest(task: Any) -> None:
        if task.manifest is not manifest:
            original_compile(task)
            return
        key = frozenset(manifest.nodes)
        graph = graphs.get(key)
        if graph is None:
            original_compile(task)
            graphs[key] = task.graph
            levels_of[id(task.graph.graph)] = depth_levels(task.graph.graph)
        else:
            task.graph = graph

    def nodes(graph: Any) -> set[Any]:
        # A selector's graph is a view of a compiled graph, which no wave changes.
        view = graph.graph
        if id(getattr(view, "_graph", view)) not in levels_of:
            return original_nodes(graph)
        listed = node_lists.get(view)
        if listed is None:
            listed = node_lists[view] = frozenset(view.nodes())
        return set(listed)

    def get_subset_graph(graph: Any, selected: Any) -> Any:
        levels = levels_of.get(id(graph.graph))
        found = subset_graph(graph.graph, levels, selected) if levels is not None else None
        return Graph(found) if found is not None else original_subset(graph, selected)

    def populate_adapter_cache(task: Any, adapter: Any, required_schemas: Any = None) -> None:
        # --cache-selected-only fills the cache with the selected schemas only: each wave's own.
        if (
            task.manifest is not manifest
            or not getattr(task.args, "populate_cache", True)
            or get_flags().CACHE_SELECTED_ONLY is True
        ):
            original_populate(task, adapter, required_schemas)
            return
        if relations:
            adapter.cache = relations[0]
            return
        original_populate(task, adapter, required_schemas)
        relations.append(adapter.cache)

    def load_profile(*args: Any, **kwargs: Any) -> Any:
        key = ("profile", repr(args), repr(sorted(kwargs.items())))
        if key not in loaded:
            loaded[key] = original_load_profile(*args, **kwargs)
        return loaded[key]

    def load_project(project_root: Any, version_check: Any, profile: Any, *args: Any, **kwargs: Any) -> Any:
        # The profile is the one load_profile kept, so its identity stands for its content.
        key = (
            "project",
            repr(project_root),
            repr(version_check),
            id(profile),
            repr(args),
            repr(sorted(kwargs.items())),
        )
        if key not in loaded:
            loaded[key] = original_load_project(project_root, version_check, profile, *args, **kwargs)
        return loaded[key]

    def schema_key(relation: Any) -> tuple[str, str]:
        return (str(relation.database or "").lower(), str(relation.schema or "").lower())

    def create_schemas(task: Any, adapter: Any, required_schemas: Any) -> None:
        if task.manifest is not manifest:
            original_create_schemas(task, adapter, required_schemas)
            return
        unknown = {relation for relation in required_schemas if schema_key(relation) not in known_schemas}
        if unknown:
            original_create_schemas(task, adapter, unknown)
            known_schemas.update(schema_key(relation) for relation in unknown)

    def search(method: Any, included_nodes: Any, selector: str) -> Iterator[Any]:
        found = by_fqn.get(selector) if method.manifest is manifest else None
        if found is None:
            yield from original_search(method, included_nodes, selector)
            return
        yield from (unique_id for unique_id in found if unique_id in included_nodes)

    def get_prefixed_modules(cls: Any) -> dict[str, Any]:
        if not discovered_modules:
            discovered_modules.update(original_prefixed_modules.__func__(cls))  # type: ignore[union-attr]
        return dict(discovered_modules)

    BuildTask.compile_manifest = compile_manifest  # type: ignore[method-assign, assignment]
    Graph.get_subset_graph = get_subset_graph  # type: ignore[method-assign, assignment]
    Graph.nodes = nodes  # type: ignore[method-assign, assignment]
    BuildTask.create_schemas = create_schemas  # type: ignore[method-assign, assignment]
    requires.load_profile, requires.load_project = load_profile, load_project
    BuildTask.populate_adapter_cache = populate_adapter_cache  # type: ignore[method-assign, assignment]
    QualifiedNameSelectorMethod.search = search  # type: ignore[method-assign, assignment]
    if isinstance(original_prefixed_modules, classmethod):
        PluginManager.get_prefixed_modules = classmethod(get_prefixed_modules)  # type: ignore[method-assign, assignment]
    try:
        yield WaveSelectors(by_fqn)
    finally:
        BuildTask.compile_manifest = original_compile  # type: ignore[method-assign]
        Graph.get_subset_graph = original_subset  # type: ignore[method-assign]
        Graph.nodes = original_nodes  # type: ignore[method-assign]
        if own_create_schemas:
            BuildTask.create_schemas = original_create_schemas  # type: ignore[method-assign]
        else:
            del BuildTask.create_schemas
        requires.load_profile, requires.load_project = original_load_profile, original_load_project
        if own_populate:
            BuildTask.populate_adapter_cache = original_populate  # type: ignore[method-assign]
        else:
            del BuildTask.populate_adapter_cache
        QualifiedNameSelectorMethod.search = original_search  # type: ignore[method-assign]
        if isinstance(original_prefixed_modules, classmethod):
            PluginManager.get_prefixed_modules = original_prefixed_modules  # type: ignore[method-assign, assignment]


def release_duckdb_file() -> None:
    """Close dbt-duckdb's database instance in this process once no connection uses it.

    dbt-duckdb keeps one DuckDB instance per process (``DuckDBConnectionManager._ENV``,
    checked with dbt-duckdb 1.9 to 1.11), and DuckDB holds the file's write lock while it
    is open. The dbt CLI's process exits when the command ends, which releases the file; a
    flow's process lives on, and then no other process (a later ``dbt seed``, another
    flow) can open it. So each invocation and each orchestrated build ends with this.
    dbt-duckdb's ``keep_open`` (true by default in 1.11) keeps the instance open between
    invocations in one process; it is closed here all the same, because the lock it holds
    blocks every other process, and opening the file again costs milliseconds. Kept open:
    an in-memory database (closing it would drop its data), a MotherDuck one, and any
    instance a connection still uses.
    """
    import sys

    module = sys.modules.get("dbt.adapters.duckdb.connections")
    manager = getattr(module, "DuckDBConnectionManager", None)
    if manager is None:
        return
    with manager._LOCK:
        env = manager._ENV
        creds = getattr(env, "creds", None)
        if env is None or getattr(env, "handle_count", 1) > 0 or creds is None:
            return
        if getattr(creds, "path", ":memory:") == ":memory:" or getattr(creds, "is_motherduck", True):
            return
        manager._ENV = None
        try:
            env.close()
        except Exception:  # already closed by DuckDB itself
            pass


@contextmanager
def duckdb_file_released() -> Iterator[None]:
    """Release the DuckDB file (release_duckdb_file) when the block ends, however it ends."""
    try:
        yield
    finally:
        release_duckdb_file()
