"""The run report's lineage picture (runner/report/mermaid.py), alone: what it draws, what
it folds, how it escapes, and that it stays within mermaid's limits at any size.

The real renderer is checked by tests/scripts/check_ui_pages.py, which draws these
pictures in Prefect's V2 UI in Chromium (the synthetic builds below included)."""

from __future__ import annotations

import re

import pytest

from dbt_prefect.runner.report.mermaid import (
    MAX_BOXES,
    MAX_EDGES,
    MAX_FOLDS,
    MAX_TEXT,
    CheckCounts,
    LineageNode,
    describe_folding,
    draw_lineage,
    escape,
    plan_picture,
    render_mermaid,
    utf16_length,
)
from support.lineage_graphs import node_id, pipeline_build


def task_run_page(task_run_id: object) -> str:
    return f"http://127.0.0.1:4200/v2/runs/task-run/{task_run_id}"


def unescape(text: str) -> str:
    """What mermaid shows for a label: each #<code>; entity back to its character."""
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), text)


def labels(text: str) -> dict[str, list[str]]:
    """Box id -> the lines of its label, as mermaid shows them."""
    found = {}
    for box, label in re.findall(r'^  ([nf]\d+)[\[(]*"(.*?)"[\])]*:::\w+$', text, re.M):
        found[box] = [unescape(line) for line in label.split("<br/>")]
    return found


def edges(text: str) -> set[tuple[str, str]]:
    pairs = set()
    for source, targets in re.findall(r"^  ([nf]\d+) --> (.+)$", text, re.M):
        pairs |= {(source, target) for target in targets.split(" & ")}
    return pairs


# -- a small build, drawn whole ------------------------------------------------------------
def test_a_small_build_is_drawn_whole_with_status_in_colour_and_words_and_links_to_task_runs() -> None:
    nodes = pipeline_build(2, depth=4, failed=[(1, 2)], failed_tests=[(0, 3)])
    text = draw_lineage(nodes, task_run_page).text
    assert text == "\n".join(
        [
            '%%{init: {"themeVariables": {"lineColor": "#8b95a5"}}}%%',
            "flowchart LR",
            "  classDef failed fill:#fee2e2,stroke:#b91c1c,color:#7f1d1d,stroke-width:3px",
            "  classDef skipped fill:#e5e7eb,stroke:#4b5563,color:#1f2937,stroke-dasharray:5 3",
            "  classDef succeeded fill:#dcfce7,stroke:#15803d,color:#14532d",
            "  classDef read fill:#f8fafc,stroke:#94a3b8,color:#334155,stroke-dasharray:2 2",
            "  classDef testfailed stroke:#dc2626,stroke-width:4px",
            '  n0[("p0000_l0<br/>source")]:::read',
            '  n1(["p0000_l1<br/>seed · ✓ success"]):::succeeded',
            '  n2["p0000_l2<br/>model · ✓ success<br/>tests · 2 passed"]:::succeeded',
            '  n3["p0000_l3<br/>model · ✓ success<br/>tests · 1 failed, 1 passed"]:::succeeded',
            '  n4[("p0001_l0<br/>source")]:::read',
            '  n5(["p0001_l1<br/>seed · ✓ success"]):::succeeded',
            '  n6["p0001_l2<br/>model · ✗ error<br/>tests · 2 skipped"]:::failed',
            '  n7["p0001_l3<br/>model · ⊘ skipped<br/>tests · 2 skipped"]:::skipped',
            # The model whose test failed keeps its colour, with a failure's border.
            "  class n3 testfailed",
            "  n0 --> n2",
            "  n1 --> n2",
            "  n2 --> n3",
            "  n4 --> n6",
            "  n5 --> n6",
            "  n6 --> n7",
            '  click n1 href "http://127.0.0.1:4200/v2/runs/task-run/00000000-0000-0000-0000-000000000001"',
            '  click n2 href "http://127.0.0.1:4200/v2/runs/task-run/00000000-0000-0000-0000-000000000002"',
            '  click n3 href "http://127.0.0.1:4200/v2/runs/task-run/00000000-0000-0000-0000-000000000003"',
            '  click n5 href "http://127.0.0.1:4200/v2/runs/task-run/00000000-0000-0000-0001-000000000001"',
            '  click n6 href "http://127.0.0.1:4200/v2/runs/task-run/00000000-0000-0000-0001-000000000002"',
            '  click n7 href "http://127.0.0.1:4200/v2/runs/task-run/00000000-0000-0000-0001-000000000003"',
        ]
    )
    # As mermaid shows them: the words are there, not only the colour.
    assert labels(text)["n6"] == ["p0001_l2", "model · ✗ error", "tests · 2 skipped"]
    assert labels(text)["n0"] == ["p0000_l0", "source"]
    # No link without a UI to link to.
    assert "click" not in draw_lineage(nodes).text


def test_the_part_of_the_build_that_failed_is_drawn_first_at_the_top_of_the_picture() -> None:
    nodes = pipeline_build(3, depth=3, failed=[(2, 2)], failed_tests=[])
    warned = [LineageNode("model.p.w", "w", "model", "warn", "models", parents=(node_id(1, 2),))]
    picture = plan_picture(nodes + warned)
    # Pipeline 2 (an error), then pipeline 1 (a warning downstream), then pipeline 0.
    assert [n.unique_id for n in picture.shown] == [
        *(node_id(2, layer) for layer in range(3)),
        *(node_id(1, layer) for layer in range(3)),
        "model.p.w",
        *(node_id(0, layer) for layer in range(3)),
    ]


def test_a_warned_test_gives_an_amber_border_and_a_failed_node_keeps_its_own() -> None:
    nodes = [
        LineageNode("model.p.a", "a", "model", "success", "models", tests=CheckCounts(passed=1, warned=1)),
        LineageNode("model.p.b", "b", "model", "error", "models", tests=CheckCounts(failed=1)),
    ]
    text = draw_lineage(nodes).text
    assert "  classDef testwarned stroke:#d97706,stroke-width:3px" in text.splitlines()
    assert "  class n1 testwarned" in text.splitlines()
    assert "testfailed" not in text


@pytest.mark.parametrize(
    ("status", "css_class", "words"),
    [
        ("success", "succeeded", "model · ✓ success"),
        ("pass", "succeeded", "model · ✓ pass"),
        ("warn", "warned", "model · ⚠ warn"),
        ("error", "failed", "model · ✗ error"),
        ("fail", "failed", "model · ✗ fail"),
        ("runtime error", "failed", "model · ✗ runtime error"),
        ("partial success", "failed", "model · ✗ partial success"),
        ("skipped", "skipped", "model · ⊘ skipped"),
        ("no-op", "noop", "model · – no-op"),
        ("cached", "cached", "model · ↻ cached"),
        (None, "read", "model · not run"),
    ],
)
def test_every_status_has_its_colour_and_its_words(status: str | None, css_class: str, words: str) -> None:
    node = LineageNode("model.p.m", "m", "model", status, "models")
    text = draw_lineage([node]).text
    assert re.search(rf"^  n0\[\".*\"\]:::{css_class}$", text, re.M), text
    assert labels(text)["n0"] == ["m", words]
    assert f"  classDef {css_class} " in text


def test_tests_are_counts_on_the_node_they_check_not_nodes() -> None:
    node = LineageNode("model.p.m", "m", "model", "success", "models", tests=CheckCounts(passed=3, warned=1, failed=2))
    text = draw_lineage([node]).text
    assert labels(text) == {"n0": ["m", "model · ✓ success", "tests · 2 failed, 1 warned, 3 passed"]}


# -- escaping ------------------------------------------------------------------------------
HOSTILE = [
    'say "hi"',
    "it's",
    "a.b-c",
    "end",
    "graph",
    "class",
    "subgraph",
    "style:#1;",
    "classDef x fill:#f00;",
    "100%%#1<b>&amp;</b>",
    "café_ünï_数据",
    "😀_emoji",
    "`markdown`",
    "click n0 call alert(1)",
    "a|b{c}[d](e)",
    "-->",
    "%%{init: {}}%%",
    "line\nbreak",
    "rtl\u202eoverride\u2028separator",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_name_stays_inside_its_label(name: str) -> None:
    node = LineageNode(f"model.p.{name}", name, "model", "success", "models")
    line = draw_lineage([node]).text.splitlines()[-1]
    match = re.fullmatch(r'  n0\["(.*)"\]:::succeeded', line)
    assert match, line
    inside = match.group(1)
    # Of ASCII, only letters, digits and a few marks; then entity codes, the line breaks we
    # put there, and printable unicode (no control or separator character).
    assert re.fullmatch(r"(?:[A-Za-z0-9 _.,/()=+@-]|#\d+;|<br/>|[^\x00-\x7f\u2028\u2029\u202e])*", inside), inside
    assert unescape(inside).split("<br/>") == [" ".join(name.split()), "model · ✓ success"]


def test_escape_turns_every_other_character_into_a_numeric_entity_code() -> None:
    assert escape('a"b') == "a#34;b"
    assert escape("end") == "end"
    assert escape("é😀✓数") == "é😀✓数"
    assert escape("a\u2028b\u202ec") == "a#8232;b#8238;c"
    assert escape("x:#1;") == "x#58;#35;1#59;"


def test_long_names_are_cut_in_the_middle_to_32_characters() -> None:
    name = "accepted_values_customers_customer_segment__prospect__new__returning"
    node = LineageNode("model.p.long", name, "model", "success", "models")
    assert labels(draw_lineage([node]).text)["n0"][0] == "accepted_values_…_new__returning"


# -- large builds: at most about 150 boxes --------------------------------------------------
@pytest.mark.parametrize("size", [20, 150])
def test_up_to_150_nodes_every_node_is_drawn(size: int) -> None:
    nodes = pipeline_build(size // 10, failed=[(1, 4)])
    assert len(nodes) == size
    lineage = draw_lineage(nodes, task_run_page)
    # Every node, the failed pipeline first.
    assert [n.unique_id for n in lineage.picture.shown] == [
        *(n.unique_id for n in nodes[10:20]),
        *(n.unique_id for n in nodes[:10]),
        *(n.unique_id for n in nodes[20:]),
    ]
    assert lineage.picture.folds == ()
    assert len(labels(lineage.text)) == size
    # Every edge of the build, and nothing folded to say.
    assert len(edges(lineage.text)) == sum(len(n.parents) for n in nodes)
    assert describe_folding(lineage.picture) == []
    assert len(lineage.text) <= MAX_TEXT


def test_at_1000_nodes_the_failure_its_upstream_path_and_its_downstream_are_drawn_the_rest_folded() -> None:
    nodes = pipeline_build(100, failed=[(7, 5)])
    lineage = draw_lineage(nodes, task_run_page)
    picture = lineage.picture
    # Pipeline 7: its source, seed and models above the error, the error, and every node
    # it skipped (each the direct downstream of the one before).
    assert [n.unique_id for n in picture.shown] == [node_id(7, layer) for layer in range(10)]
    assert [(f.folder, len(f.members), f.statuses) for f in picture.folds] == [
        *((f"models/layer_{layer}", 99, (("success", 99),)) for layer in range(2, 10)),
        ("seeds", 99, (("success", 99),)),
        ("sources", 99, (("source", 99),)),
    ]
    found = labels(lineage.text)
    assert found["f0"] == ["models/layer_2 · 99 folded", "99 ✓ success", "tests · 198 passed"]
    assert found["f9"] == ["sources · 99 folded", "99 source"]
    assert found["n5"] == ["p0007_l5", "model · ✗ error", "tests · 2 skipped"]
    # Folded boxes keep the lineage between folders, and to the nodes drawn alone.
    assert ("f9", "f0") in edges(lineage.text) and ("f0", "f1") in edges(lineage.text)
    assert ("n4", "n5") in edges(lineage.text) and ("n5", "n6") in edges(lineage.text)
    assert describe_folding(picture) == [
        "This build is too large to draw whole (the picture keeps to about 150 boxes). It draws 10 of the "
        "1,000 nodes one by one: 1 failed (or with failed tests), 4 skipped, 5 upstream of them. The other "
        "990 are folded into 10 dashed boxes, one per folder:",
        "",
        *(f"- `models/layer_{layer}`: 99 (99 success)" for layer in range(2, 10)),
        "- `seeds`: 99 (99 success)",
        "- `sources`: 99 (99 source)",
    ]


def test_a_failed_test_keeps_its_node_in_sight_with_its_path_and_direct_downstream() -> None:
    nodes = pipeline_build(100, failed_tests=[(3, 6)])
    picture = plan_picture(nodes)
    # Its upstream path (layers 0 to 5) and its direct downstream (layer 7), not layer 8.
    assert [n.unique_id for n in picture.shown] == [node_id(3, layer) for layer in range(8)]
    assert picture.kept_for == {"failed": 1, "upstream": 6, "downstream": 1}


def test_a_green_build_of_1000_nodes_is_one_box_per_folder() -> None:
    picture = plan_picture(pipeline_build(100))
    assert picture.shown == ()
    assert len(picture.folds) == 10
    assert describe_folding(picture)[0].endswith(
        "Every one of the 1,000 nodes succeeded (or was read): none is drawn alone. "
        "The other 1,000 are folded into 10 dashed boxes, one per folder:"
    )


def test_at_5000_nodes_with_many_failures_the_picture_keeps_to_150_boxes_and_says_what_it_left_out() -> None:
    failures = [(p, 3) for p in range(0, 500, 5)]  # 100 errors, 600 skipped nodes
    nodes = pipeline_build(500, failed=failures)
    lineage = draw_lineage(nodes, task_run_page)
    picture = lineage.picture
    assert len(nodes) == 5000
    assert len(picture.shown) + len(picture.folds) <= MAX_BOXES
    assert len(picture.folds) <= MAX_FOLDS
    # Every error is drawn, before anything else.
    errors = {node_id(p, layer) for p, layer in failures}
    assert errors <= {n.unique_id for n in picture.shown}
    shown_skipped = sum(1 for n in picture.shown if n.status == "skipped")
    assert picture.cut == 600 - shown_skipped > 0
    assert describe_folding(picture)[-1] == (
        f"{picture.cut} nodes that did not succeed are folded too, for room (their boxes count them): "
        "the Failures section lists every failure, and the table artifact every node."
    )
    # Every node is drawn once or counted once in a box.
    assert len(picture.shown) + sum(len(f.members) for f in picture.folds) == 5000
    assert len(lineage.text) <= MAX_TEXT
    assert len(picture.edges) <= MAX_EDGES


def test_many_folders_become_at_most_20_boxes() -> None:
    nodes = [
        LineageNode(f"model.p.m{i}", f"m{i}", "model", "success", f"models/area_{i % 40}/sub_{i % 7}")
        for i in range(2000)
    ]
    picture = plan_picture(nodes)
    # Not one "models" box: the 19 largest areas, then the other 21 in one box.
    assert len(picture.folds) == MAX_FOLDS
    assert [f.folder for f in picture.folds] == sorted([*(f"models/area_{a}" for a in range(19)), "other folders"])
    assert [len(f.members) for f in picture.folds if f.folder == "other folders"] == [21 * 50]
    assert sum(len(f.members) for f in picture.folds) == 2000


def test_folders_are_shortened_before_they_are_lumped_together() -> None:
    nodes = [
        LineageNode(f"model.p.m{i}", f"m{i}", "model", "success", f"models/area_{i % 5}/sub_{i % 30}")
        for i in range(600)
    ]
    assert sorted(f.folder for f in plan_picture(nodes).folds) == [f"models/area_{a}" for a in range(5)]


def test_too_many_edges_for_mermaid_folds_the_picture_further() -> None:
    # 150 nodes, each reading the 4 hubs: 584 edges, more than mermaid's 500.
    hubs = [LineageNode(f"seed.p.h{i}", f"h{i}", "seed", "success", "seeds") for i in range(4)]
    readers = [
        LineageNode(
            f"model.p.r{i}", f"r{i}", "model", "success", f"models/g{i % 3}", parents=tuple(h.unique_id for h in hubs)
        )
        for i in range(146)
    ]
    lineage = draw_lineage(hubs + readers)
    assert len(lineage.picture.edges) <= MAX_EDGES
    assert len(edges(lineage.text)) == len(lineage.picture.edges)
    assert lineage.picture.folds


def test_too_much_text_for_mermaid_folds_the_picture_further() -> None:
    # 150 failed models named with 31 private-use characters (#983040; to mermaid), and
    # linked: about 54,000 characters drawn whole.
    nodes = [
        LineageNode(
            f"model.p.m{i}", "\U000f0000" * 31 + str(i % 10), "model", "error", f"models/g{i % 4}", task_run_id=i
        )
        for i in range(150)
    ]
    whole = plan_picture(nodes)
    assert whole.folds == ()
    assert utf16_length(render_mermaid(whole, task_run_page)) > 50_000
    lineage = draw_lineage(nodes, task_run_page)
    assert utf16_length(lineage.text) <= MAX_TEXT
    assert lineage.picture.folds
