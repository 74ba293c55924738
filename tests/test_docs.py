"""The docs: a README a newcomer can read, links that lead somewhere, and a site that builds.

``mkdocs build --strict`` (mkdocs.yml) fails on a broken link or anchor between pages, a link
out of docs/, and a docstring the API reference cannot render, so this test fails on them too.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_WORDS = 800

# [text](target) and ![alt](target), the target up to a space or the closing parenthesis
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_readme_is_at_most_800_words():
    words = len(README.read_text(encoding="utf-8").split())  # as `wc -w` counts
    assert words <= README_MAX_WORDS, f"README.md has {words} words (at most {README_MAX_WORDS})"


def test_every_relative_link_in_the_readme_exists():
    text = README.read_text(encoding="utf-8")
    # fenced code blocks hold commands, not links
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    targets = _LINK.findall(text)
    assert targets, "README.md has no links"
    missing = []
    for target in targets:
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # https:, mailto:, an anchor of the README itself
        path = target.split("#", 1)[0]
        if not (ROOT / path).exists():
            missing.append(target)
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_docs_site_builds_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]' or '.[dev]')")
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet"]
        + ["--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert out.returncode == 0, f"mkdocs build --strict failed:\n{out.stdout}\n{out.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "sim" / "index.html").is_file()


def test_lab_notes_keep_no_per_frame_traces():
    """The result files in docs/ keep what the tables and `macdmp report` read, not the
    per-frame delay traces (most of an evaluation's file, and the working tree must stay
    small enough to travel to a GPU machine): `macdmp evaluate --json F --no-traces`."""
    from macdmp.eval.evaluate import TRACE_KEYS

    heavy = []
    for path in sorted((ROOT / "docs").rglob("*.json")):
        text = path.read_text(encoding="utf-8")
        if any(f'"{key}"' in text for key in TRACE_KEYS):
            heavy.append(str(path.relative_to(ROOT)))
    assert not heavy, f"per-frame traces in {heavy}: write them with --no-traces"
