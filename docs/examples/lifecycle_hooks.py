from prefect import flow, get_run_logger
from dbt_prefect import DbtHookContext, PrefectDbtRunner

runner = PrefectDbtRunner(raise_on_failure=False)


def notify(message: str) -> None:
    # Your pager, chat or e-mail call goes here.
    get_run_logger().warning(message)


@runner.post_model(select="tag:critical")
def page_on_call(ctx: DbtHookContext) -> None:
    if ctx.status == "error":
        notify(f"{ctx.node_id} failed: {ctx.error}")


@runner.on_run_end
def summary(ctx: DbtHookContext) -> None:
    print(ctx.status, len(ctx.run_results or {}))


@flow
def build_with_hooks():
    runner.invoke(["build"])


if __name__ == "__main__":
    build_with_hooks()
