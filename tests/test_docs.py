"""The README and docs/: every relative link and #anchor resolves, and the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 260  # the two commands, the stage table, configuration in brief, links to docs/
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code (neither holds links or headings)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a markdown file's headings (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        heading = re.match(r"^#{1,6} +(.+?) *#*$", line)
        if heading:
            base = slug(heading.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """The relative links of ``path`` (a file under ``root``) whose file or #anchor does not exist."""
    broken = []
    for target in LINK.findall(_prose(path.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{path.relative_to(root)}: {target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{path.relative_to(root)}: {target} (no heading #{anchor})")
    return broken


def test_every_relative_link_and_anchor_resolves():
    documents = _documents()
    assert len(documents) > 5
    broken = [b for doc in documents for b in broken_links(doc)]
    assert not broken, "\n".join(broken)


def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move reference material into docs/"


def test_slugs_and_broken_links_are_found(tmp_path):
    doc = tmp_path / "a.md"
    doc.write_text(
        "# Build, re-extract and release (Prefect flows)\n## 6. Evaluation and splits\n## Twice\n## Twice\n"
        "```bash\n# not a heading\n[x](missing.md)\n```\n"
        "[ok](#6-evaluation-and-splits) [ok](#twice-1) [ok](a.md#build-re-extract-and-release-prefect-flows)\n"
        "[bad](#not-a-heading) [bad](b.md) [web](https://example.com/x.md) `[code](c.md)`\n"
    )
    assert anchors(doc) == {"build-re-extract-and-release-prefect-flows", "6-evaluation-and-splits", "twice", "twice-1"}
    found = [b.split(": ", 1)[1] for b in broken_links(doc, tmp_path)]
    assert found == ["#not-a-heading (no heading #not-a-heading)", "b.md (no such file)"]
