from prefect import flow
from dbt_prefect import PrefectDbtOrchestrator, PrefectDbtSettings


@flow
def daily():
    orchestrator = PrefectDbtOrchestrator(settings=PrefectDbtSettings(project_dir="analytics"))
    results = orchestrator.run_build(select="+tag:marts")
    print({uid: r["status"] for uid, r in results.items()})


if __name__ == "__main__":
    daily()
