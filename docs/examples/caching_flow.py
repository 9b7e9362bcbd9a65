from datetime import timedelta

from prefect import flow
from dbt_prefect import CacheConfig, ExecutionMode, PrefectDbtOrchestrator, PrefectDbtSettings


@flow
def cached_build():
    orchestrator = PrefectDbtOrchestrator(
        settings=PrefectDbtSettings(project_dir="analytics"),
        execution_mode=ExecutionMode.PER_NODE,
        cache=CacheConfig(expiration=timedelta(days=1)),
    )
    results = orchestrator.run_build()
    print(sum(r["status"] == "cached" for r in results.values()), "of", len(results), "nodes cached")


if __name__ == "__main__":
    cached_build()
