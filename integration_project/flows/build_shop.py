"""Build the demo shop with dbt inside a Prefect flow.

    python integration_project/flows/build_shop.py            # green build
    python integration_project/flows/build_shop.py --fail     # one test fails on purpose

On a flow retry, only what failed or was skipped is rerun (`dbt retry`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from prefect import flow
from prefect.runtime.flow_run import get_run_count

from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings

PROJECT_DIR = Path(__file__).resolve().parents[1]

# The profile reads the DuckDB path from this variable; keep the file inside the project.
os.environ.setdefault("SHOP_DUCKDB_PATH", str(PROJECT_DIR / "shop.duckdb"))


@flow(name="build-shop", retries=1, retry_delay_seconds=0)
def build_shop(fail_demo_test: bool = False) -> None:
    runner = PrefectDbtRunner(
        settings=PrefectDbtSettings(project_dir=PROJECT_DIR, profiles_dir=PROJECT_DIR)
    )
    if not (PROJECT_DIR / "dbt_packages" / "dbt_prefect").exists():
        runner.invoke(["deps"])
    if get_run_count() == 1:
        args = ["build"]
        if fail_demo_test:
            args += ["--vars", "{fail_demo_test: true}"]
        runner.invoke(args)
    else:
        runner.invoke(["retry"])


if __name__ == "__main__":
    build_shop(fail_demo_test="--fail" in sys.argv[1:])
