from prefect import flow
from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings


@flow
def run_dbt():
    PrefectDbtRunner(
        settings=PrefectDbtSettings(project_dir="analytics", profiles_dir="analytics")
    ).invoke(["build"])


if __name__ == "__main__":
    run_dbt()
