"""The run report's lineage picture: a mermaid flowchart of what one invocation ran.

Pure functions of plain records (``LineageNode``), with no dbt or Prefect in them, so
that they can be tested alone at any size. Prefect's V2 UI draws a markdown artifact's
``mermaid`` block as a picture (V1 shows its source); its mermaid runs with
``securityLevel: strict``, which keeps plain ``click ... href`` links and drops callbacks
and link targets, and it refuses a diagram of more than 50,000 characters or 500 edges
(mermaid's ``maxTextSize`` and ``maxEdges``, which a diagram cannot raise).

A picture is bounded: up to ``MAX_BOXES`` nodes it shows every node. Above that it shows
every node that did not succeed (or whose tests did not), with its upstream path to the
sources and its direct downstream, and folds the rest into one box per folder, with
counts by status. It folds more when the text or the edges would pass mermaid's limits.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dbt_prefect.model.statuses import CACHED, Outcome, classify

MAX_BOXES = 150
MAX_FOLDS = 20
# Shorter folder names are used only while they leave at least this many boxes.
MIN_USEFUL_FOLDS = 3
# Below mermaid's own limits (50,000 characters, 500 edges), with a margin.
MAX_TEXT = 45_000
MAX_EDGES = 450
# A longer name is cut in the middle (a dbt name's end tells it apart as much as its
# start): mermaid wraps a label past 200 px, and each wrapped line makes a tall picture taller.
MAX_NAME = 32

# -- the records -------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckCounts:
    """The verdicts of the tests (data and unit tests) on one node."""

    passed: int = 0
    warned: int = 0
    failed: int = 0
    skipped: int = 0

    def __add__(self, other: CheckCounts) -> CheckCounts:
        return CheckCounts(
            self.passed + other.passed,
            self.warned + other.warned,
            self.failed + other.failed,
            self.skipped + other.skipped,
        )

    def __bool__(self) -> bool:
        return bool(self.passed or self.warned or self.failed or self.skipped)

    @classmethod
    def of(cls, status: str) -> CheckCounts:
        outcome = classify(status).outcome
        if outcome is Outcome.FAILED:
            return cls(failed=1)
        if outcome is Outcome.WARNED:
            return cls(warned=1)
        if outcome is Outcome.SKIPPED:
            return cls(skipped=1)
        return cls(passed=1)

    def words(self) -> str:
        """``1 failed, 3 passed``: the counts that are not zero, the worst first."""
        counts = (("failed", self.failed), ("warned", self.warned), ("passed", self.passed), ("skipped", self.skipped))
        return ", ".join(f"{n:,} {word}" for word, n in counts if n)


@dataclass(frozen=True)
class LineageNode:
    """A seed, model, snapshot or source of the picture.

    ``status`` is what dbt reported; None for a node the invocation read but did not run
    (a source of a build, a parent outside the selection). ``parents`` are the unique ids
    of its parents in the picture, ephemeral models passed through. ``folder`` is where it
    is folded in a large build."""

    unique_id: str
    name: str
    resource_type: str
    status: str | None
    folder: str
    parents: tuple[str, ...] = ()
    tests: CheckCounts = field(default_factory=CheckCounts)
    task_run_id: Any = None


# -- what a status looks like ------------------------------------------------------------


@dataclass(frozen=True)
class Look:
    css_class: str
    symbol: str
    style: str
    rank: int  # the worst member colours a folded box


# Pastel fills with dark text and strong borders: the V2 UI draws the diagram on a dark
# panel in both its themes, and these read on light and dark backgrounds alike.
LOOKS = {
    "failed": Look("failed", "✗", "fill:#fee2e2,stroke:#b91c1c,color:#7f1d1d,stroke-width:3px", 0),
    "warned": Look("warned", "⚠", "fill:#fef3c7,stroke:#b45309,color:#78350f,stroke-width:2px", 1),
    "skipped": Look("skipped", "⊘", "fill:#e5e7eb,stroke:#4b5563,color:#1f2937,stroke-dasharray:5 3", 2),
    "succeeded": Look("succeeded", "✓", "fill:#dcfce7,stroke:#15803d,color:#14532d", 4),
    "cached": Look("cached", "↻", "fill:#dbeafe,stroke:#1d4ed8,color:#1e3a8a", 5),
    "noop": Look("noop", "–", "fill:#f1f5f9,stroke:#64748b,color:#334155", 6),
    "read": Look("read", "", "fill:#f8fafc,stroke:#94a3b8,color:#334155,stroke-dasharray:2 2", 7),
}
# A node that ran but whose tests failed (or warned) keeps its own colour, with the border
# of a failure (or a warning): found at a glance, and its own status still true.
TEST_BORDERS = {
    "testfailed": "stroke:#dc2626,stroke-width:4px",
    "testwarned": "stroke:#d97706,stroke-width:3px",
}
_OUTCOME_LOOK = {
    Outcome.FAILED: "failed",
    Outcome.WARNED: "warned",
    Outcome.SKIPPED: "skipped",
    Outcome.NO_OP: "noop",
    Outcome.SUCCEEDED: "succeeded",
}
# Edges in a grey that shows on the dark panel of both themes: the UI's own line colour,
# its border colour, disappears in the dark theme. (A directive's spacing settings, which
# would make a tall picture shorter, have no effect in the UI: checked in Prefect 3.9.1.)
INIT = '%%{init: {"themeVariables": {"lineColor": "#8b95a5"}}}%%'


def look_of(status: str | None) -> Look:
    if status is None:
        return LOOKS["read"]
    if status == CACHED:
        return LOOKS["cached"]
    return LOOKS[_OUTCOME_LOOK[classify(status).outcome]]


# What a node read but not run is called, in place of a status.
SOURCE, NOT_RUN = "source", "not run"


def status_key(node: LineageNode) -> str:
    """The node's status, or what it is when the invocation read it without running it."""
    if node.status is not None:
        return node.status
    return SOURCE if node.resource_type == "source" else NOT_RUN


def _symbol_and_word(status: str) -> str:
    if status in (SOURCE, NOT_RUN):
        return status
    return f"{look_of(status).symbol} {status}"


def status_words(node: LineageNode) -> str:
    """``model · ✗ error``; a node read but not run says what it is: ``source``, ``model · not run``."""
    if node.status is None and node.resource_type == "source":
        return SOURCE
    return f"{node.resource_type} · {_symbol_and_word(status_key(node))}"


def _concern(node: LineageNode) -> int:
    """0 failed (itself or a test), 1 warned, 2 skipped, 3 fine."""
    look = look_of(node.status)
    if look.css_class == "failed" or node.tests.failed:
        return 0
    if look.css_class == "warned" or node.tests.warned:
        return 1
    if look.css_class == "skipped":
        return 2
    return 3


# -- escaping ------------------------------------------------------------------------------
# Inside a quoted label mermaid still reads entity codes (#quot;, #35;), HTML, markdown
# (a label in backticks), a comment (%%) and, on a line with "style" or "classDef", a ':'
# followed by '#'. So every ASCII character but letters, digits, space and a few marks
# becomes a numeric entity code, which mermaid turns back into the character, as do
# control and separator characters. Other unicode (accents, CJK, emoji, our ✓) stays as
# it is, readable in the source that Prefect's V1 UI shows. Names may hold quotes, dots,
# dashes, unicode and words mermaid reserves (end, graph, class): none can break out.
_PLAIN_ASCII = re.compile(r"[A-Za-z0-9 _.,/()=+@-]")


def _plain(ch: str) -> bool:
    if ch.isascii():
        return bool(_PLAIN_ASCII.fullmatch(ch))
    return unicodedata.category(ch)[0] not in "CZ"


def escape(text: str) -> str:
    return "".join(ch if _plain(ch) else f"#{ord(ch)};" for ch in text)


def short_name(name: str, limit: int = MAX_NAME) -> str:
    """``name`` on one line, at most ``limit`` characters, its middle cut out if longer."""
    name = " ".join(name.split()) or "?"
    if len(name) <= limit:
        return name
    head = limit // 2
    return name[:head] + "…" + name[len(name) - (limit - 1 - head) :]


# -- choosing what to draw -----------------------------------------------------------------


@dataclass(frozen=True)
class Fold:
    """One box standing for the nodes of a folder that are not drawn one by one."""

    folder: str
    members: tuple[str, ...]
    statuses: tuple[tuple[str, int], ...]  # (status, count), most first
    tests: CheckCounts
    look: Look


@dataclass(frozen=True)
class Picture:
    shown: tuple[LineageNode, ...]
    folds: tuple[Fold, ...]
    edges: tuple[tuple[str, str], ...]  # box ids
    total: int
    # When folded: how many shown nodes failed, warned or were skipped, and how many are
    # shown as the upstream or direct downstream of those.
    kept_for: Mapping[str, int]
    cut: int  # nodes that did not succeed but were folded for room


def _ancestors(start: Iterable[str], by_id: Mapping[str, LineageNode]) -> list[str]:
    """Every upstream node of ``start``, nearest first."""
    seen = set(start)
    order: list[str] = []
    queue = deque(start)
    while queue:
        for parent in by_id[queue.popleft()].parents:
            if parent in by_id and parent not in seen:
                seen.add(parent)
                order.append(parent)
                queue.append(parent)
    return order


def _priority(nodes: Sequence[LineageNode], by_id: Mapping[str, LineageNode]) -> list[tuple[str, str]]:
    """The nodes to draw one by one in a large build, most important first, each with why:
    every node that did not succeed (failed, then warned, then skipped), then its upstream
    path, then its direct downstream."""
    children: dict[str, list[str]] = defaultdict(list)
    for node in nodes:
        for parent in node.parents:
            children[parent].append(node.unique_id)
    order: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(unique_ids: Iterable[str], why: str) -> None:
        for unique_id in unique_ids:
            if unique_id not in seen:
                seen.add(unique_id)
                order.append((unique_id, why))

    for concern, why in ((0, "failed"), (1, "warned"), (2, "skipped")):
        picked = [n.unique_id for n in nodes if _concern(n) == concern]
        add(picked, why)
        add(_ancestors(picked, by_id), "upstream")
        add((child for unique_id in picked for child in children[unique_id]), "downstream")
    return order


def _folder_at(folder: str, depth: int) -> str:
    package, _, path = folder.rpartition(": ")
    parts = [p for p in path.split("/") if p]
    short = "/".join(parts[:depth]) or path
    return f"{package}: {short}" if package else short


def _fold_keys(folders: Mapping[str, str]) -> dict[str, str]:
    """Each folded node's box: its folder, or a shorter prefix of it when there would be
    more than MAX_FOLDS boxes (so long as that leaves a few); past that, the largest
    folders keep their boxes and the rest share one "other folders" box."""
    if not folders:
        return {}
    deepest = max(len(f.rpartition(": ")[2].split("/")) for f in folders.values())
    by_depth = {depth: {uid: _folder_at(f, depth) for uid, f in folders.items()} for depth in range(1, deepest + 1)}
    chosen = by_depth[deepest]
    for depth in range(deepest, 0, -1):
        count = len(set(by_depth[depth].values()))
        if count <= MAX_FOLDS:
            if count >= MIN_USEFUL_FOLDS or depth == deepest:
                chosen = by_depth[depth]
            break
        chosen = by_depth[depth]
    sizes = Counter(chosen.values())
    if len(sizes) <= MAX_FOLDS:
        return chosen
    kept = {folder for folder, _ in sizes.most_common(MAX_FOLDS - 1)}
    return {uid: f if f in kept else "other folders" for uid, f in chosen.items()}


def _fold(folded: Sequence[LineageNode]) -> tuple[list[Fold], dict[str, str]]:
    keys = _fold_keys({n.unique_id: n.folder for n in folded})
    members: dict[str, list[LineageNode]] = defaultdict(list)
    for node in folded:
        members[keys[node.unique_id]].append(node)
    folds, box_of = [], {}
    for index, folder in enumerate(sorted(members)):
        group = members[folder]
        statuses = Counter(status_key(n) for n in group)
        tests = sum((n.tests for n in group), CheckCounts())
        worst = min((look_of(n.status) for n in group), key=lambda look: look.rank)
        folds.append(
            Fold(
                folder=folder,
                members=tuple(n.unique_id for n in group),
                statuses=tuple(sorted(statuses.items(), key=lambda item: (-item[1], item[0]))),
                tests=tests,
                look=worst,
            )
        )
        for node in group:
            box_of[node.unique_id] = f"f{index}"
    return folds, box_of


def _failures_first(shown: Sequence[LineageNode]) -> list[LineageNode]:
    """The nodes in the order mermaid stacks them from the top: first the connected groups
    with a failure (then a warning, then a skip), so that a tall picture of a wide project
    shows its failed model at the top. Within a group, the order is kept."""
    index = {n.unique_id: i for i, n in enumerate(shown)}
    group = list(range(len(shown)))

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    for i, node in enumerate(shown):
        for parent in node.parents:
            if parent in index:
                group[root(i)] = root(index[parent])
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(len(shown)):
        members[root(i)].append(i)
    ordered = sorted(members.values(), key=lambda m: (min(_concern(shown[i]) for i in m), m[0]))
    return [shown[i] for m in ordered for i in m]


def _split(
    nodes: Sequence[LineageNode], picked: Sequence[tuple[str, str]]
) -> tuple[list[LineageNode], list[LineageNode], list[Fold], dict[str, str]]:
    keep = {unique_id for unique_id, _ in picked}
    shown = [n for n in nodes if n.unique_id in keep]
    folded = [n for n in nodes if n.unique_id not in keep]
    folds, box_of = _fold(folded)
    return shown, folded, folds, box_of


def plan_picture(nodes: Sequence[LineageNode], max_boxes: int = MAX_BOXES) -> Picture:
    """What to draw: every node up to ``max_boxes``; above, the nodes that need a look,
    one by one, and the rest folded by folder (see the module's docstring)."""
    by_id = {n.unique_id: n for n in nodes}
    folded: list[LineageNode] = []
    if len(nodes) <= max_boxes:
        shown, kept_for, cut = list(nodes), {}, 0
    else:
        ranked = _priority(nodes, by_id)
        # Room for MAX_FOLDS boxes first; then the room the boxes left, if that keeps the total.
        budget = max(max_boxes - MAX_FOLDS, 0)
        shown, folded, folds, box_of = _split(nodes, ranked[:budget])
        roomier = max_boxes - len(folds)
        if roomier > budget and len(ranked) > budget:
            attempt = _split(nodes, ranked[:roomier])
            if len(attempt[0]) + len(attempt[2]) <= max_boxes:
                budget = roomier
                shown, folded, folds, box_of = attempt
        # In words, a node that did not succeed is counted as what it is, whatever picked it.
        concerns = {0: "failed", 1: "warned", 2: "skipped"}
        kept_for = dict(Counter(concerns.get(_concern(by_id[uid]), why) for uid, why in ranked[:budget]))
        cut = sum(1 for unique_id, _ in ranked[budget:] if _concern(by_id[unique_id]) < 3)
    if not folded:
        folds, box_of = [], {}
    shown = _failures_first(shown)
    ids = {n.unique_id: f"n{i}" for i, n in enumerate(shown)}
    box_of.update(ids)
    edges: dict[tuple[str, str], None] = {}
    for node in [*shown, *folded]:
        target = box_of[node.unique_id]
        for parent in node.parents:
            source = box_of.get(parent)
            if source is not None and source != target:
                edges[(source, target)] = None
    return Picture(tuple(shown), tuple(folds), tuple(edges), len(nodes), kept_for, cut)


# -- drawing -------------------------------------------------------------------------------
_SHAPES = {"source": ('[("', '")]'), "seed": ('(["', '"])'), "snapshot": ('[["', '"]]')}


def _node_line(box: str, node: LineageNode) -> str:
    lines = [escape(short_name(node.name)), escape(status_words(node))]
    if node.tests:
        lines.append(escape(f"tests · {node.tests.words()}"))
    opening, closing = _SHAPES.get(node.resource_type, ('["', '"]'))
    return f"  {box}{opening}{'<br/>'.join(lines)}{closing}:::{look_of(node.status).css_class}"


def _fold_line(box: str, fold: Fold) -> str:
    counts = " · ".join(f"{n:,} {_symbol_and_word(status)}" for status, n in fold.statuses)
    lines = [escape(f"{short_name(fold.folder)} · {len(fold.members):,} folded"), escape(counts)]
    if fold.tests:
        lines.append(escape(f"tests · {fold.tests.words()}"))
    return f'  {box}["{"<br/>".join(lines)}"]:::fold_{fold.look.css_class}'


def render_mermaid(picture: Picture, task_run_url: Callable[[Any], str] | None = None) -> str:
    """The flowchart's text (without the fence): left to right, sources first."""
    used = {look_of(n.status).css_class for n in picture.shown}
    folded_looks = {f.look.css_class for f in picture.folds}
    lines = [INIT, "flowchart LR"]
    for look in LOOKS.values():
        if look.css_class in used:
            lines.append(f"  classDef {look.css_class} {look.style}")
        if look.css_class in folded_looks:
            solid = ",".join(part for part in look.style.split(",") if not part.startswith("stroke-dasharray"))
            lines.append(f"  classDef fold_{look.css_class} {solid},stroke-dasharray:8 4")
    bordered: dict[str, list[str]] = defaultdict(list)
    for index, node in enumerate(picture.shown):
        concern = look_of(node.status).rank
        if node.tests.failed and concern > LOOKS["failed"].rank:
            bordered["testfailed"].append(f"n{index}")
        elif node.tests.warned and concern > LOOKS["warned"].rank:
            bordered["testwarned"].append(f"n{index}")
    for name, style in TEST_BORDERS.items():
        if bordered[name]:
            lines.append(f"  classDef {name} {style}")
    for index, node in enumerate(picture.shown):
        lines.append(_node_line(f"n{index}", node))
    for name in TEST_BORDERS:
        if bordered[name]:
            lines.append(f"  class {','.join(bordered[name])} {name}")
    for index, fold in enumerate(picture.folds):
        lines.append(_fold_line(f"f{index}", fold))
    targets: dict[str, list[str]] = defaultdict(list)
    for source, target in picture.edges:
        targets[source].append(target)
    for source, ends in targets.items():
        lines.append(f"  {source} --> {' & '.join(ends)}")
    if task_run_url is not None:
        for index, node in enumerate(picture.shown):
            if node.task_run_id is not None:
                lines.append(f'  click n{index} href "{task_run_url(node.task_run_id)}"')
    return "\n".join(lines)


def utf16_length(text: str) -> int:
    """The length mermaid measures (JavaScript's, in UTF-16 code units: an emoji is 2)."""
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class Lineage:
    """The picture and its text, within mermaid's limits."""

    picture: Picture
    text: str


def draw_lineage(
    nodes: Sequence[LineageNode],
    task_run_url: Callable[[Any], str] | None = None,
    max_boxes: int = MAX_BOXES,
) -> Lineage:
    """The picture of ``nodes`` and its mermaid text: folded further (fewer boxes) until the
    text and the edges are within mermaid's limits."""
    while True:
        picture = plan_picture(nodes, max_boxes)
        text = render_mermaid(picture, task_run_url)
        within = utf16_length(text) <= MAX_TEXT and len(picture.edges) <= MAX_EDGES
        if within or max_boxes <= MAX_FOLDS:
            return Lineage(picture, text)
        max_boxes = max(MAX_FOLDS, int(max_boxes * 0.75))


def describe_folding(picture: Picture) -> list[str]:
    """In words: what the picture draws one by one and what it folded."""
    if not picture.folds:
        return []
    shown, total = len(picture.shown), picture.total
    folded = total - shown
    why = picture.kept_for
    reasons = [
        f"{why[key]:,} {label}"
        for key, label in (
            ("failed", "failed (or with failed tests)"),
            ("warned", "warned"),
            ("skipped", "skipped"),
            ("upstream", "upstream of them"),
            ("downstream", "directly downstream"),
        )
        if why.get(key)
    ]
    if shown:
        drawn = f"It draws {shown:,} of the {total:,} nodes one by one: {', '.join(reasons)}."
    else:
        drawn = f"Every one of the {total:,} nodes succeeded (or was read): none is drawn alone."
    boxes = "box" if len(picture.folds) == 1 else "boxes"
    lines = [
        f"This build is too large to draw whole (the picture keeps to about {MAX_BOXES} boxes). {drawn} "
        f"The other {folded:,} are folded into {len(picture.folds)} dashed {boxes}, one per folder:",
        "",
    ]
    for fold in picture.folds:
        counts = ", ".join(f"{n:,} {status}" for status, n in fold.statuses)
        lines.append(f"- `{fold.folder}`: {len(fold.members):,} ({counts})")
    if picture.cut:
        lines += [
            "",
            f"{picture.cut:,} nodes that did not succeed are folded too, for room (their boxes count them): "
            "the Failures section lists every failure, and the table artifact every node.",
        ]
    return lines
