from prefect import flow
from dbt_prefect import PrefectDbtRunner


@flow
def build_what_changed():
    # A directory, a block slug such as "local-file-system/dbt-state", or a storage block.
    runner = PrefectDbtRunner(state_store="dbt-state")
    runner.invoke(["build"], only_changed=True)


if __name__ == "__main__":
    build_what_changed()
