"""The run report's lineage picture for real builds: what dbt ran and what it read, with
dbt's statuses, the tests counted on their nodes, and links to the task runs, read back
from the server. The picture alone (folding, escaping, limits) is in
tests/unit/test_lineage_picture.py; how Prefect's V2 UI draws it, in
tests/scripts/check_ui_pages.py."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.context import FlowRunContext

from dbt_prefect import CacheConfig, PrefectDbtRunner, PrefectDbtSettings
from dbt_prefect.runner.report import LineageNode
from support.hostile_names import GENERATED_MODELS, make_hostile_copy
from support.orchestration import orchestrate
from support.prefect_api import by_name, task_runs
from support.projects import make_shop_copy

pytestmark = pytest.mark.usefixtures("prefect_server")

# The session's server runs without the UI; its address is known, and V1's pages are
# what every Prefect serves (tests/test_ui_links.py has a server with the UI).
UI = os.environ["PREFECT_API_URL"].removesuffix("/api")


def build_in_flow(project: Path, args: list[str]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    @flow(name="lineage-test")
    def build() -> None:
        seen["flow_run_id"] = FlowRunContext.get().flow_run.id
        runner = PrefectDbtRunner(
            settings=PrefectDbtSettings(project_dir=project, profiles_dir=project), raise_on_failure=False
        )
        runner.invoke(args)
        seen["report"] = runner.last_report

    state = build(return_state=True)
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[seen["flow_run_id"]]))
        )
    seen["markdown"] = next(a.data for a in artifacts if a.type == "markdown")
    seen["task_runs"] = by_name(task_runs(seen["flow_run_id"]))
    return seen


def unescape(text: str) -> str:
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), text)


def mermaid_of(markdown: str) -> str:
    return markdown.split("```mermaid\n", 1)[1].split("\n```", 1)[0]


def boxes(text: str) -> dict[str, list[str]]:
    """Box id -> its label's lines, as mermaid shows them."""
    return {
        box: [unescape(line) for line in label.split("<br/>")]
        for box, label in re.findall(r'^  ([nf]\d+)[\[(]*"(.*?)"[\])]*:::\w+$', text, re.M)
    }


def links(text: str) -> dict[str, str]:
    return dict(re.findall(r'^  click (n\d+) href "(.*)"$', text, re.M))


def edges(text: str) -> set[tuple[str, str]]:
    pairs = set()
    for source, targets in re.findall(r"^  ([nf]\d+) --> (.+)$", text, re.M):
        pairs |= {(source, target) for target in targets.split(" & ")}
    return pairs


def summary(nodes: list[LineageNode]) -> list[tuple[str, str, str | None, tuple[str, ...], tuple[int, int, int, int]]]:
    """(name, type, status, parents' names, tests passed/warned/failed/skipped) of each node."""
    names = {n.unique_id: n.name for n in nodes}
    return [
        (
            n.name,
            n.resource_type,
            n.status,
            tuple(names[p] for p in n.parents),
            (n.tests.passed, n.tests.warned, n.tests.failed, n.tests.skipped),
        )
        for n in nodes
    ]


# -- a build of the shop with a broken model ---------------------------------------------
@pytest.fixture(scope="module")
def broken_shop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`dbt build` of the whole shop with stg_payments broken: what reads it is skipped."""
    project = make_shop_copy(tmp_path_factory.mktemp("lineage-shop"))
    (project / "models" / "staging" / "stg_payments.sql").write_text(
        "select no_such_column from {{ source('payments_app', 'payments') }}\n"
    )
    return build_in_flow(project, ["build"])


def test_the_picture_holds_what_dbt_ran_and_read_with_its_statuses_edges_and_tests(broken_shop: dict[str, Any]) -> None:
    # Sources first, then seeds, snapshots and models, each by name; parents in the order
    # of the model's refs. orders reads stg_payments through the ephemeral
    # int_order_payments, which is passed through (its parents come after the direct ones).
    # Tests are counted on the node they check (a singular test on each node it reads);
    # the tests of a failed or skipped model are skipped.
    assert summary(broken_shop["report"].lineage) == [
        ("payments_app.payments", "source", None, (), (2, 0, 0, 0)),
        ("raw_customers", "seed", "success", (), (1, 0, 0, 0)),
        ("raw_orders", "seed", "success", (), (0, 0, 0, 0)),
        ("raw_products", "seed", "success", (), (0, 0, 0, 0)),
        ("customers_snapshot", "snapshot", "success", ("stg_customers",), (0, 0, 0, 0)),
        ("customers", "model", "skipped", ("stg_customers", "orders"), (0, 0, 0, 4)),
        ("daily_order_summary", "model", "skipped", ("orders",), (0, 0, 0, 3)),
        ("internal_order_audit", "model", "skipped", ("orders",), (0, 0, 0, 0)),
        ("orders", "model", "skipped", ("stg_orders", "stg_products", "stg_payments"), (0, 0, 0, 3)),
        ("product_revenue", "model", "skipped", ("stg_products", "orders"), (0, 0, 0, 2)),
        ("stg_customers", "model", "success", ("raw_customers",), (1, 0, 0, 0)),
        ("stg_orders", "model", "success", ("raw_orders",), (4, 0, 0, 0)),
        ("stg_payments", "model", "error", ("payments_app.payments",), (0, 0, 0, 3)),
        ("stg_products", "model", "success", ("raw_products",), (1, 0, 0, 0)),
    ]


def test_the_published_picture_shows_the_failure_in_words_and_links_each_node_to_its_task_run(
    broken_shop: dict[str, Any],
) -> None:
    text = mermaid_of(broken_shop["markdown"])
    found = boxes(text)
    assert found["n12"] == ["stg_payments", "model · ✗ error", "tests · 3 skipped"]
    assert re.search(r'^  n12\["stg_payments<br/>model · ✗ error<br/>tests · 3 skipped"\]:::failed$', text, re.M)
    assert found["n8"] == ["orders", "model · ⊘ skipped", "tests · 3 skipped"]
    assert found["n0"] == ["payments_app.payments", "source", "tests · 2 passed"]
    assert ("n0", "n12") in edges(text) and ("n12", "n8") in edges(text)
    # Every node dbt ran links to the task run of that node; the source, not run, links nowhere.
    names = {box: lines[0] for box, lines in found.items()}
    types = {box: lines[1].split(" · ")[0] for box, lines in found.items()}
    runs = broken_shop["task_runs"]
    assert links(text) == {
        box: f"{UI}/runs/task-run/{runs[f'{types[box]} {name}'].id}" for box, name in names.items() if box != "n0"
    }


# -- names that a diagram must survive ------------------------------------------------------
@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    project = make_hostile_copy(tmp_path_factory.mktemp("lineage-hostile"))
    return build_in_flow(project, ["build"])


def test_hostile_names_keep_their_place_status_and_tests_in_the_picture(hostile: dict[str, Any]) -> None:
    assert summary(hostile["report"].lineage) == [
        ('app.v2-data.events"raw"', "source", None, (), (1, 0, 0, 0)),
        ("seed-with-dash", "seed", "success", (), (0, 0, 0, 0)),
        ("direction", "snapshot", "success", ("end",), (0, 0, 0, 0)),
        ('"quoted"', "model", "success", ("end",), (0, 0, 0, 0)),
        ("100%#1<b>&amp;", "model", "success", ("end",), (0, 0, 0, 0)),
        ("a.b", "model", "success", ("end",), (0, 0, 0, 0)),
        ("café_ünï_数据", "model", "success", ("it's", "graph"), (0, 0, 1, 0)),
        ("class", "model", "success", ('app.v2-data.events"raw"',), (0, 0, 0, 0)),
        ("click", "model", "skipped", ("subgraph",), (0, 0, 0, 0)),
        ("end", "model", "success", ("seed-with-dash",), (2, 0, 0, 0)),
        ("graph", "model", "success", ("end",), (1, 1, 0, 0)),
        ("it's", "model", "success", ("class",), (0, 0, 0, 0)),
        ("style:#1;", "model", "success", ("end",), (0, 0, 0, 0)),
        # Through the ephemeral `flowchart`.
        ("subgraph", "model", "error", ("a.b",), (0, 0, 0, 0)),
        ("😀_emoji", "model", "success", ("end",), (0, 0, 0, 0)),
    ]
    assert set(GENERATED_MODELS) <= {n.name for n in hostile["report"].lineage}


def test_hostile_names_are_escaped_in_the_published_picture(hostile: dict[str, Any]) -> None:
    text = mermaid_of(hostile["markdown"])
    shown = {lines[0]: lines[1:] for lines in boxes(text).values()}
    assert shown == {
        'app.v2-data.events"raw"': ["source", "tests · 1 passed"],
        "seed-with-dash": ["seed · ✓ success"],
        "direction": ["snapshot · ✓ success"],
        '"quoted"': ["model · ✓ success"],
        "100%#1<b>&amp;": ["model · ✓ success"],
        "a.b": ["model · ✓ success"],
        "café_ünï_数据": ["model · ✓ success", "tests · 1 failed"],
        "class": ["model · ✓ success"],
        "click": ["model · ⊘ skipped"],
        "end": ["model · ✓ success", "tests · 2 passed"],
        "graph": ["model · ✓ success", "tests · 1 warned, 1 passed"],
        "it's": ["model · ✓ success"],
        "style:#1;": ["model · ✓ success"],
        "subgraph": ["model · ✗ error"],
        "😀_emoji": ["model · ✓ success"],
    }
    # In the text itself, no name escapes its quotes, opens HTML or an entity, or ends a line.
    assert '  n3["#34;quoted#34;<br/>model · ✓ success"]:::succeeded' in text.splitlines()
    assert '  n4["100#37;#35;1#60;b#62;#38;amp#59;<br/>model · ✓ success"]:::succeeded' in text.splitlines()
    assert '  n12["style#58;#35;1#59;<br/>model · ✓ success"]:::succeeded' in text.splitlines()
    assert '  n6["café_ünï_数据<br/>model · ✓ success<br/>tests · 1 failed"]:::succeeded' in text.splitlines()


# -- the orchestrator's report --------------------------------------------------------------
def test_an_orchestrated_build_answered_by_its_cache_shows_cached_nodes(tmp_path: Path) -> None:
    project = make_shop_copy(tmp_path)
    store = tmp_path / "cache"
    options = {"cache": CacheConfig(key_storage=store), "raise_on_failure": False}
    first = orchestrate(project, None, **options)
    assert first.error is None, first.error
    again = orchestrate(project, None, **options)
    assert again.error is None, again.error
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[again.flow_run_id]))
        )
    text = mermaid_of(next(a.data for a in artifacts if a.type == "markdown"))
    shown = {lines[0]: lines[1] for lines in boxes(text).values()}
    # Cached per node: every seed and table or view model; the snapshot and the
    # incremental model are never cached (see tests/test_orchestrator_cache.py).
    assert shown == {
        "payments_app.payments": "source",
        "raw_customers": "seed · ↻ cached",
        "raw_orders": "seed · ↻ cached",
        "raw_products": "seed · ↻ cached",
        "customers_snapshot": "snapshot · ✓ success",
        "customers": "model · ↻ cached",
        "daily_order_summary": "model · ✓ success",
        "internal_order_audit": "model · ↻ cached",
        "orders": "model · ↻ cached",
        "product_revenue": "model · ↻ cached",
        "stg_customers": "model · ↻ cached",
        "stg_orders": "model · ↻ cached",
        "stg_payments": "model · ↻ cached",
        "stg_products": "model · ↻ cached",
    }
    assert "  classDef cached fill:#dbeafe,stroke:#1d4ed8,color:#1e3a8a" in text.splitlines()
    runs = by_name(task_runs(again.flow_run_id))
    found = boxes(text)
    box = next(b for b, lines in found.items() if lines[0] == "orders")
    assert links(text)[box] == f"{UI}/runs/task-run/{runs['model orders'].id}"
