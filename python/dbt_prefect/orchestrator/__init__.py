"""PrefectDbtOrchestrator: Prefect runs the dbt DAG, wave by wave or node by node.

``options`` holds the official enums and CacheConfig; ``cli_args`` checks extra_cli_args;
``preparation`` parses once and lets dbt select; ``freshness`` finds stale sources;
``plan`` turns the selection into the node graph and its waves (and BuildPlan);
``per_wave`` runs one dbt build per wave in the flow's process; ``per_node`` submits one
task per node, which ``worker`` runs in the ``warm_project`` of its process (``shipping``
packs the project for ``ship_project``; ``lost_workers`` counts a node's executions lost
with their Dask worker against its retries);
``results`` is the official results dict; ``run_results`` writes run_results.json for
dbt retry; ``cache``, ``cache_keys`` and ``cache_store`` are CacheConfig's caching (keys
over code and data, hit or miss, the stored keys); ``orchestrator`` ties them together.
"""
