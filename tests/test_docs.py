"""The documentation a user follows: every page reachable from the README, every relative link and anchor real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT

DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
# The Markdown a user reads on the repository's pages; generated reports are left to the report's own tests.
PAGES = [REPO_ROOT / "README.md", *DOCS, REPO_ROOT / "reports" / "README.md"]
PAGES += sorted((REPO_ROOT / "task_configs").rglob("*.md"))
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE = re.compile(r"`[^`\n]*`")


def _prose(path: Path) -> str:
    """The page without code blocks or inline code, where brackets are not links."""
    return FENCE.sub("", path.read_text())


def _links(path: Path) -> list[str]:
    # Inline code keeps its text but loses brackets and parentheses, so `f([1])` is no link and [`file`](file) is.
    prose = CODE.sub(lambda m: re.sub(r"[\[\]()]", "", m.group(0)), _prose(path))
    return [link for link in LINK.findall(prose) if not re.match(r"[a-z]+:", link)]


def _anchors(path: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose(path).splitlines():
        heading = re.match(r"#{1,6} (.+)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            seen[slug] = seen.get(slug, -1) + 1
            anchors.add(slug if seen[slug] == 0 else f"{slug}-{seen[slug]}")
    return anchors


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(REPO_ROOT / link.split("#")[0]).resolve() for link in _links(REPO_ROOT / "README.md")}
    assert DOCS, "docs/ holds the reference pages"
    assert [p.name for p in DOCS if p.resolve() not in linked] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_resolve_to_files_and_headings(page):
    broken = []
    for link in _links(page):
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(f"{link}: no such file")
        elif anchor and (path.suffix != ".md" or anchor not in _anchors(path)):
            broken.append(f"{link}: no heading #{anchor}")
    assert broken == []


def test_links_are_found_and_anchors_checked():
    """Guards the checker itself: a page with known links, anchors and a code block."""
    readme_links = _links(REPO_ROOT / "README.md")
    assert "docs/windows.md" in readme_links and "reports/README.md" in readme_links
    assert "results-on-the-embedded-model" in _anchors(REPO_ROOT / "README.md")
    assert "a-second-model-gemma-3-270m-optional" in _anchors(REPO_ROOT / "docs" / "packaged_models.md")
    assert "one-model-across-several-gpus-parallelizetrue" in _anchors(REPO_ROOT / "docs" / "scaling.md")
