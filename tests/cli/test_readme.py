"""The README is the front door: short, opening with the two set-up commands, its links to
docs/ resolving, its commands ones the `ltsweep` parser accepts, its Python blocks formatted,
and README and docs/ speaking of the product, not of how it was made."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ltsweep.cli import build_parser
from tests.helpers import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
#: the set-up commands, verbatim: `.ci/run` runs the second one as written
SETUP = (
    "pip install -e . && ltsweep run sweeps/smoke.yaml",
    "pip install -e '.[test]' && pytest",
)
MAX_LINES = 200
#: a relative Markdown link's target: [text](target) or [text](target#anchor)
LINK = re.compile(r"\[[^\]]*\]\(([^)#\s]+)(?:#[^)\s]*)?\)")
#: a link's target and anchor, the target empty for a link within the page
ANCHORED = re.compile(r"\[[^\]]*\]\(([^)#\s]*)#([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: words of working notes; a citation of another project's issue (owner/repo issue #10) is fine
NOTE_WORDS = re.compile(r"\bsessions?\b|\bclosing note\b|\bissues? #?\d+", re.IGNORECASE)
CITATION = re.compile(r"[\w.-]+/[\w.-]+(?:'s)? issues? #?\d+(?:\s*(?:and|,)\s*#?\d+)*", re.I)


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def blocks(path: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text()) if lang == language]


def test_readme_is_short() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines; at most {MAX_LINES}"


def test_readme_opens_with_the_two_setup_commands() -> None:
    text = README.read_text()
    first = FENCE.search(text)
    assert first is not None and first.group(1) == "bash"
    before = text[: first.start()].strip()
    assert before.startswith("# ") and "\n" not in before, "only the title comes before them"
    assert tuple(first.group(2).strip().splitlines()) == SETUP


def test_ci_runs_the_readme_test_command() -> None:
    assert SETUP[1] in (REPO / ".ci" / "run").read_text().splitlines()


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_links_resolve(page: Path) -> None:
    missing = [
        target
        for target in LINK.findall(page.read_text())
        if "://" not in target and not (page.parent / target).exists()
    ]
    assert not missing, f"{page.name} links to files that do not exist: {missing}"


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings (outside code blocks)."""
    text = FENCE.sub("", page.read_text())
    titles = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", t.strip().lower()).replace(" ", "-") for t in titles}


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_anchors_resolve(page: Path) -> None:
    broken = []
    for target, anchor in ANCHORED.findall(page.read_text()):
        linked = page.parent / target if target else page
        if linked.suffix == ".md" and linked.exists() and anchor not in anchors(linked):
            broken.append(f"{target}#{anchor}")
    assert not broken, f"{page.name} links to headings that do not exist: {broken}"


def test_readme_links_every_docs_page() -> None:
    linked = {Path(t).name for t in LINK.findall(README.read_text()) if t.startswith("docs/")}
    unlinked = sorted(p.name for p in DOCS.glob("*.md") if p.name not in linked)
    assert not unlinked, f"README.md does not link {unlinked}"


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_no_working_notes(page: Path) -> None:
    found = [
        f"{page.name}:{number}: {line.strip()}"
        for number, line in enumerate(page.read_text().splitlines(), 1)
        if NOTE_WORDS.search(CITATION.sub("", line))
    ]
    assert not found, "\n".join(found)


def ltsweep_lines(page: Path) -> list[str]:
    """Every `ltsweep ...` command of the page's bash blocks, without comments or env prefix."""
    out = []
    for body in blocks(page, "bash"):
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                words = words[1:]
            if words[:1] == ["ltsweep"]:
                out.append(words[1:])
            elif "&&" in words and words[words.index("&&") + 1 :][:1] == ["ltsweep"]:
                out.append(words[words.index("&&") + 2 :])
    return out


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_commands_parse(page: Path) -> None:
    """Each `ltsweep` command shown is one the parser accepts: a renamed option fails here."""
    parser = build_parser()
    for args in ltsweep_lines(page):
        try:
            parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"{page.name}: `ltsweep {' '.join(args)}` is not a valid command")


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_python_blocks_are_formatted(page: Path) -> None:
    for body in blocks(page, "python"):
        check = subprocess.run(
            [
                sys.executable,
                "-m",
                "ruff",
                "format",
                "--check",
                "--stdin-filename",
                "block.py",
                "-",
            ],
            input=body,
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert check.returncode == 0, f"{page.name}: a Python block is not ruff-formatted:\n{body}"
