"""What users need lives in the repository: every relative link of README.md and docs/*.md resolves to a file in
it, and a Markdown file named in a code span (a link in all but form) does too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
MARKDOWN_IN_CODE = re.compile(r"`([^`\s]+\.md)`")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto: ...


def relative_targets(document: Path) -> list[str]:
    """The document's relative link targets (fragments dropped) and the Markdown files its code spans name."""
    text = document.read_text()
    targets = [t for t in LINK.findall(text) if not EXTERNAL.match(t) and not t.startswith("#")]
    return [t.split("#", 1)[0] for t in targets] + MARKDOWN_IN_CODE.findall(text)


def test_the_documentation_is_there():
    assert {p.name for p in DOCUMENTS} >= {"README.md", "architecture.md", "files-and-formats.md",
                                           "troubleshooting.md"}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves_to_a_file_in_the_repository(document):
    broken = []
    for target in relative_targets(document):
        resolved = (document.parent / target).resolve()
        if not resolved.is_relative_to(REPO) or not resolved.is_file():
            broken.append(target)
    assert not broken, f"{document.name} links outside the repository or to nothing: {broken}"


def test_readme_links_each_document_of_docs():
    linked = {(REPO / t).resolve() for t in relative_targets(REPO / "README.md")}
    assert set(DOCUMENTS[1:]) <= linked
