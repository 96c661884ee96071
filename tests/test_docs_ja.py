"""Japanese documentation: README.ja.md shows the same two commands as README.md, the
quick starts in docs/ja/ use commands and flags that exist, and the Colab notebook's text is in
Japanese with English beside it."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from sdcloud.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def _bash_blocks(path: Path) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def test_readme_ja_has_the_same_two_commands():
    english = _bash_blocks(ROOT / "README.md")[:2]
    japanese = _bash_blocks(ROOT / "README.ja.md")[:2]
    assert len(english) == 2 and english == japanese
    text = (ROOT / "README.ja.md").read_text(encoding="utf-8")
    assert "README.ja.md" in (ROOT / "README.md").read_text(encoding="utf-8")  # each links the other
    assert "README.md" in text
    for guide in ("docs/ja/colab.md", "docs/ja/paperspace.md", "docs/ja/runpod.md"):
        assert guide in text


@pytest.mark.parametrize("name", ["colab", "paperspace", "runpod"])
def test_quick_start_in_japanese_with_working_commands(name):
    path = ROOT / "docs" / "ja" / f"{name}.md"
    text = path.read_text(encoding="utf-8")
    assert len(JAPANESE.findall(text)) > 200
    commands = [line for block in _bash_blocks(path) for line in block.splitlines() if "-m sdcloud " in line]
    assert any(" serve " in c for c in commands), "the quick start starts the server"
    parser = build_parser()
    for line in commands:
        args = shlex.split(line.split("-m sdcloud ", 1)[1].replace("<", "").replace(">", ""))
        parser.parse_args(args)  # exits (SystemExit) on a flag that does not exist


def test_notebook_text_in_japanese_with_english_beside_it():
    nb = json.loads((ROOT / "notebooks" / "colab.ipynb").read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            paragraphs = [p for p in source.split("\n\n") if p.strip()]
            assert all(JAPANESE.search(p) for p in paragraphs)
            assert all(re.search(r"(?:\b[A-Za-z]{2,}\b[ ,.']+){3}", p) for p in paragraphs)
        else:
            title = next(line for line in source.splitlines() if line.startswith("# @title"))
            assert JAPANESE.search(title) and " / " in title
            assert '"-m", "sdcloud.cli"' not in source  # Colab cells use python -m sdcloud


def _command_cells(path: Path, heading: str) -> set[str]:
    """The code spans of the first column of the command table under ``heading``."""
    text = path.read_text(encoding="utf-8")
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("|---")][1:]
    cells = [re.split(r"(?<!\\)\|", row)[1] for row in rows]
    return {span for cell in cells for span in re.findall(r"`([^`]+)`", cell)}


def test_readme_ja_command_map_has_every_row_of_the_english_one():
    """A command added to README.md's command map needs its row in README.ja.md too."""
    english = _command_cells(ROOT / "README.md", "## Commands")
    japanese = _command_cells(ROOT / "README.ja.md", "## コマンド")
    assert {"sdcloud worker --broker URL --store URL", "sdcloud workers"} <= english
    assert english - japanese == set(), "rows of README.md's command map missing in README.ja.md"


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", ["README.md", "README.ja.md", "docs/ja/colab.md", "docs/ja/paperspace.md",
                                 "docs/ja/runpod.md"])
def test_readmes_and_japanese_docs_links_resolve(doc):
    path = ROOT / doc
    links = re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8"))
    assert links
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        assert file.exists(), f"{doc}: {link} points to nothing"
        if anchor and file.is_file():
            headings = re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), re.M)
            assert anchor in {_slug(h) for h in headings}, f"{doc}: no heading for #{anchor} in {target or doc}"
