"""The repository stands alone: every link in the docs and every ``docs/…md §n`` reference in the
code resolves inside the checkout, and nothing points outside it."""

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tracked(*suffixes) -> list:
    """Files git tracks (relative paths) ending with one of ``suffixes``."""
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [n for n in names if n.endswith(suffixes)]


def read(name: str) -> str:
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def read_text_or_empty(name: str) -> str:
    try:
        return read(name)
    except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
        return ""


@pytest.fixture(scope="module")
def in_git():
    if not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout: the tracked files are unknown")


def test_nothing_points_outside_the_repository(in_git):
    """No tracked file outside .ci/ names the team's folder beside the checkout."""
    outside = "../" + "shared"  # spelled in two parts so this file does not match itself
    hits = [n for n in tracked("") if not n.startswith(".ci/") and outside in read_text_or_empty(n)]
    assert not hits, hits


def test_every_markdown_link_resolves(in_git):
    """Relative links and images in every tracked markdown file point to files that exist."""
    broken = []
    for name in tracked(".md"):
        for target in re.findall(r"\]\(([^)\s]+)\)", read(name)):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or an anchor on the same page
            path = os.path.normpath(os.path.join(ROOT, os.path.dirname(name), target.split("#")[0]))
            if not path.startswith(ROOT) or not os.path.exists(path):
                broken.append(f"{name}: {target}")
    assert not broken, broken


def test_every_docs_reference_in_the_code_exists(in_git):
    """``docs/design.md §4`` in a docstring: the file exists and has a heading ``§4``."""
    broken = []
    for name in tracked(".py", ".md"):
        for doc, section in re.findall(r"(docs/[\w-]+\.md)(?: §(\d+))?", read(name)):
            if not os.path.isfile(os.path.join(ROOT, doc)):
                broken.append(f"{name}: {doc}")
            elif section and not re.search(rf"^#+ §{section}\b", read(doc), re.M):
                broken.append(f"{name}: {doc} §{section}")
    assert not broken, broken
