#!/usr/bin/env python3
"""Check the built site itself: its own links resolve, and it loads nothing from outside.

    python docs/hooks/check_site.py site

MkDocs' strict build checks the links written in the pages' markdown. This reads the
HTML it produced, navigation, search and generated API pages included:
- every link or reference to another file of the site (href, src) names a file that
  exists, and a ``#fragment`` names an id on that page;
- no page loads a script, a style sheet, a font, an image or a frame from another host:
  the site must work offline. Links that a reader follows to other sites are allowed
  and counted; style sheets are searched for remote ``url(...)`` and ``@import`` too;
- no page has a mermaid diagram without a mermaid script of the site's own: Material's
  JavaScript would fetch mermaid from a CDN for it.

Exit code 1 with one line per problem. Standard library only, so ``dev.py`` and the tests
can run it anywhere.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

# The attributes that make the browser fetch something, by tag. <a href> is followed by
# the reader, so it may leave the site.
FETCHING = {"script": "src", "img": "src", "iframe": "src", "source": "src", "audio": "src", "video": "src"}
REMOTE_CSS = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])(?:https?:)?//""", re.I)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, url)
        self.mermaid = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if "mermaid" in values.get("class", "").split():
            self.mermaid = True
        for key in ("id", "name") if tag == "a" else ("id",):
            if values.get(key):
                self.ids.add(values[key])
        if tag in ("a", "link", "area") and "href" in values:
            self.links.append((tag, "href", values["href"]))
        if tag in FETCHING and values.get(FETCHING[tag]):
            self.links.append((tag, FETCHING[tag], values[FETCHING[tag]]))
        for candidate in values.get("srcset", "").split(","):
            if candidate.strip():
                self.links.append((tag, "srcset", candidate.split()[0]))


def _external(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.scheme in ("http", "https") or url.startswith("//"))


def _target(site: Path, page: Path, url: str) -> tuple[Path, str]:
    parts = urlsplit(url)
    path = unquote(parts.path)
    base = page.parent
    target = (site / path.lstrip("/")) if path.startswith("/") else (base / path) if path else page
    target = target.resolve()
    if target.is_dir() or path.endswith("/"):
        target = target / "index.html"
    return target, unquote(parts.fragment)


def check(site: Path) -> tuple[list[str], int]:
    """The problems found in the built site at ``site``, and the number of outside links."""
    site = site.resolve()
    pages: dict[Path, _Page] = {}
    for html in sorted(site.rglob("*.html")):
        parser = _Page()
        parser.feed(html.read_text(encoding="utf-8"))
        pages[html.resolve()] = parser
    if not pages:
        return [f"{site}: no HTML pages (build the site first)"], 0
    problems: list[str] = []
    outside_links = 0
    for page, parsed in pages.items():
        where = page.relative_to(site)
        for tag, attribute, url in parsed.links:
            if url.startswith(("mailto:", "javascript:", "data:", "tel:")):
                continue
            if _external(url):
                if tag == "a":
                    outside_links += 1
                else:
                    problems.append(f"{where}: <{tag} {attribute}> loads {url} from outside the site")
                continue
            if urlsplit(url).scheme:
                problems.append(f"{where}: <{tag} {attribute}> has an unknown kind of address: {url}")
                continue
            target, fragment = _target(site, page, url)
            if not target.is_relative_to(site):
                problems.append(f"{where}: {url} points outside the site")
            elif not target.exists():
                problems.append(f"{where}: {url} names {target.relative_to(site)}, which is not in the site")
            elif fragment and target in pages and fragment not in pages[target].ids:
                problems.append(f"{where}: {url}: no id {fragment!r} on {target.relative_to(site)}")
        local_mermaid = any(
            tag == "script" and not _external(url) and "mermaid" in url.rsplit("/", 1)[-1]
            for tag, _, url in parsed.links
        )
        if parsed.mermaid and not local_mermaid:
            problems.append(
                f"{where}: a mermaid diagram, and no mermaid script of the site's own: Material would load it from a CDN"
            )
    for sheet in sorted(site.rglob("*.css")):
        for match in REMOTE_CSS.finditer(sheet.read_text(encoding="utf-8", errors="replace")):
            problems.append(f"{sheet.relative_to(site)}: loads {match.group(0)}… from outside the site")
    return problems, outside_links


def main(argv: list[str]) -> int:
    site = Path(argv[1] if len(argv) > 1 else "site")
    problems, outside_links = check(site)
    for problem in problems:
        print(problem)
    pages = len(list(site.rglob("*.html")))
    if problems:
        print(f"site check: {len(problems)} problem(s) in {pages} pages")
        return 1
    print(
        f"site check: {pages} pages, every link inside the site resolves, nothing is loaded from outside it "
        f"({outside_links} links to other sites)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
