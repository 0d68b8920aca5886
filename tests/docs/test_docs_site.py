"""The documentation builds without a warning, and speaks of the project only."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT_TEXTS = ("README.md", "CHANGELOG.md", "configs/README.md", "projects/SparseDETR/README.md",
                 "benchmarks/RESULTS.md")
TEXTS = [*(ROOT / name for name in PROJECT_TEXTS), *sorted((ROOT / "docs").rglob("*.md"))]
# words of how the work was organised, not of the project: "issue 12", "this session", diary times, commits
PROCESS_WORDS = re.compile(
    r"\bissue \d+|\b(?:this|that|previous|next|earlier|later|same) session\b|\bUTC\b|\bcommit [0-9a-f]{7,}\b"
    r"|\bengineers?\b",
    re.IGNORECASE,
)


@pytest.mark.slow
def test_the_docs_build_without_warnings(tmp_path):
    """``make docs``: a broken reference, a missing page or a bad docstring fails."""
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(ROOT / "docs"),
         str(tmp_path / "html")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "html" / "index.html").is_file()


@pytest.mark.parametrize("path", TEXTS, ids=[str(p.relative_to(ROOT)) for p in TEXTS])
def test_no_process_words(path):
    lines = path.read_text().splitlines()
    hits = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for n, line in enumerate(lines, 1)
            if PROCESS_WORDS.search(line)]
    assert not hits, "process words in the documentation:\n" + "\n".join(hits)
