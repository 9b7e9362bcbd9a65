from prefect import flow
from dbt_prefect import DbtPrefectTranslator, PrefectDbtRunner


class WarehouseKeys(DbtPrefectTranslator):
    def asset_key(self, node, adapter_type):
        # BigQuery-style keys, without the backticks BigQuery puts in relation names.
        return f"bigquery://{node.database}/{node.schema}/{node.alias}"

    def task_run_name(self, node):
        return f"{node.resource_type}: {node.name}"


runner = PrefectDbtRunner(translator=WarehouseKeys())


@flow
def build_with_my_keys():
    runner.invoke(["build"])


if __name__ == "__main__":
    build_with_my_keys()
