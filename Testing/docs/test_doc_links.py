"""Every relative link in the project's Markdown files points to a file (and heading) that exists.

Covers README.md, docs/ (with docs/experiments/), checkpoints/ and Resources/: links and images
``[text](path)``, ``![alt](path)``, with an optional ``#anchor`` checked against the target's
headings as GitHub slugs them. Web links and links inside code are not checked.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "checkpoints").glob("*.md"),
               *(REPO / "Resources").rglob("*.md")])

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) for every line outside fenced code blocks."""
    out, in_fence = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            out.append((number, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            n = counts.get(base, 0)
            found.add(base if n == 0 else f"{base}-{n}")
            counts[base] = n + 1
    return found


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link outside code (fenced blocks and inline `code`)."""
    return [(number, m.group(1)) for number, line in prose_lines(text)
            for m in LINK.finditer(INLINE_CODE.sub("", line))]


def test_the_docs_are_found() -> None:
    names = {p.relative_to(REPO).as_posix() for p in DOCS}
    assert {"README.md", "docs/MODEL_CARD.md", "docs/engine.md", "docs/experiments/README.md"} <= names


def broken_links(doc: Path) -> list[str]:
    broken = []
    for number, target in links(doc.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = doc if not file_part else (doc.parent / file_part).resolve()
        if not dest.exists():
            broken.append(f"line {number}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor.lower() not in anchors(dest):
            broken.append(f"line {number}: {target} (no heading #{anchor} in {dest.name})")
    return broken


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(doc: Path) -> None:
    broken = broken_links(doc)
    assert not broken, f"{doc.relative_to(REPO)}:\n" + "\n".join(broken)


def test_a_missing_file_or_heading_is_reported(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# Title\n\n## How it `works`\n")
    doc = tmp_path / "a.md"
    doc.write_text("[ok](b.md#how-it-works) [gone](c.md) [bad](b.md#nowhere) [web](https://x.org/y)\n"
                   "```\n[in code](d.md)\n```\n")
    assert broken_links(doc) == ["line 1: c.md (no such file)", "line 1: b.md#nowhere (no heading #nowhere in b.md)"]


def test_the_link_pattern_and_slugs() -> None:
    assert [t for _, t in links("See [a](x.md), ![b](img/y.png \"t\") and `[c](not.md)`.")] == ["x.md", "img/y.png"]
    assert slug("How CPP expansion works") == "how-cpp-expansion-works"
    assert slug("Training, evaluation, benchmark") == "training-evaluation-benchmark"
    assert slug("The `compact` variant (ours)") == "the-compact-variant-ours"
