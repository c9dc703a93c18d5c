"""The documentation pages, read the way the docs tests need them: code blocks, links, headings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from helpers import ROOT

#: Every page: the README (the front page) and docs/*.md.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Put on the line just before a ```python fence: that block is shown, not run.
NOT_RUN = re.compile(r"<!-- not-run: (?P<why>\S.*?) -->")

_FENCE = re.compile(r"^(?P<fence>```+|~~~+)(?P<info>.*)$")
_AIRFLOW = re.compile(r"^\s*(from|import) (airflow|poller\.airflow)\b", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    """A fenced code block of a page."""

    page: Path
    line: int  # of the opening fence, 1-based
    end: int  # of the closing fence, 1-based
    language: str
    code: str
    before: str  # the line just before the opening fence

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.language == "python" and not NOT_RUN.fullmatch(self.before.strip())

    @property
    def needs_airflow(self) -> bool:
        """It imports the Airflow extra: it runs where Airflow is (tests/test_docs_airflow.py)."""
        return bool(_AIRFLOW.search(self.code))


def blocks(page: Path) -> list[Block]:
    """The page's fenced code blocks, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence = opening.group("fence")
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence), len(lines))
        found.append(
            Block(
                page=page,
                line=i + 1,
                end=end + 1,
                language=opening.group("info").strip().split(" ")[0],
                code="\n".join(lines[i + 1 : end]) + "\n",
                before=lines[i - 1] if i else "",
            )
        )
        i = end + 1
    return found


def _outside_code(page: Path) -> list[str]:
    """The page's lines, with every fenced code block's lines (fences included) blanked."""
    lines = page.read_text(encoding="utf-8").splitlines()
    for block in blocks(page):
        lines[block.line - 1 : block.end] = [""] * (block.end - block.line + 1)
    return lines


def prose(page: Path) -> str:
    """The page without its fenced code blocks and inline code spans."""
    return re.sub(r"`[^`\n]*`", "", "\n".join(_outside_code(page)))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of every heading of ``page``; a repeated heading gets -1, -2, ..."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in _outside_code(page):
        heading = re.fullmatch(r"#{1,6} +(.+?)(?: +#+)? *", line)
        if heading is None:
            continue
        base = slug(heading.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def fresh_environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POLLER_"))}
    # No instance-metadata lookups for credentials: there is no network here.
    env.update(HOME=str(home), AWS_EC2_METADATA_DISABLED="true", NO_COLOR="1")
    return env


def run_example(block: Block, tmp_path: Path) -> None:
    """``block`` exits 0 in a clean interpreter that has no AWS account to reach."""
    done = subprocess.run(
        [sys.executable, "-c", block.code],
        check=False,
        cwd=ROOT,
        env=fresh_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{block.name} failed:\n{done.stdout}\n{done.stderr}"
