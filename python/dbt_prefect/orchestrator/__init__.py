"""PrefectDbtOrchestrator: dbt-prefect runs the DAG itself, each node a Prefect task.

``plan`` turns dbt's selection into waves of nodes; ``orchestrator`` submits them;
``worker`` runs one node on a task-runner worker; ``warm_project`` keeps each worker's
parsed project and dbt session.
"""
