"""Run the code examples of every docs/*.md page, so the documentation cannot drift.

Each page is parsed for fenced code blocks tagged ``python``. Blocks with ``>>>`` prompts
run as doctests (each block's own text, so a closing fence is never read as expected
output); other Python blocks are executed when they are valid code (signature
summaries such as ``f(x, *, k=1) -> ndarray`` are not, and are skipped). All blocks of a
page share one namespace, in order, as a reader would run them.
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import numpy as np
import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[ \t]*$")
PYTHON = {"python", "py", "pycon"}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# NumPy's default print options: the pages show what a user sees in a fresh session.
PRINT_DEFAULTS = dict(precision=8, threshold=1000, edgeitems=3, linewidth=75, suppress=False,
                      nanstr="nan", infstr="inf", sign="-", floatmode="maxprec",
                      legacy=False)


def code_blocks(text: str):
    """``(first line number, language, body)`` of every fenced block, body dedented by
    the fence's indentation (blocks inside list items are indented)."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, j = m.group("indent"), i + 1
        while j < len(lines) and lines[j].rstrip() != indent + "```":
            j += 1
        if j == len(lines):
            raise AssertionError(f"line {i + 1}: code fence is never closed")
        body = [line[len(indent):] if line.startswith(indent) else line.lstrip()
                for line in lines[i + 1:j]]
        yield i + 2, m.group("lang"), "\n".join(body) + "\n"
        i = j + 1


def run_page(path: Path) -> tuple[int, list[str]]:
    """Run a page's Python blocks; return (number of examples run, failure reports)."""
    globs: dict = {"__name__": f"docs.{path.stem}"}
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    failures: list[str] = []
    examples = 0
    for lineno, lang, body in code_blocks(path.read_text(encoding="utf-8")):
        if lang not in PYTHON:
            continue
        if ">>>" in body:
            test = parser.get_doctest(body, globs, f"{path.name}:{lineno}", str(path),
                                      lineno - 1)
            report: list[str] = []
            result = runner.run(test, out=report.append, clear_globs=False)
            globs.update(test.globs)  # DocTest copies its globals: carry them forward
            examples += result.attempted
            if result.failed:
                failures.append("".join(report))
            continue
        try:
            code = compile(body, f"{path.name}:{lineno}", "exec")
        except SyntaxError:
            continue  # a signature summary, not code
        try:
            exec(code, globs)
        except Exception as err:  # report it like a doctest failure
            failures.append(f"{path.name}:{lineno}: code block raised {err!r}")
        examples += 1
    return examples, failures


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_examples(page):
    with np.printoptions(**PRINT_DEFAULTS):
        examples, failures = run_page(page)
    assert not failures, "\n".join(failures)
    assert examples > 0, f"{page.name} has no runnable example"


def test_expected_pages_exist():
    names = {p.name for p in PAGES}
    for name in ("index.md", "conv.md", "conv_transpose.md", "gradients.md", "padding.md",
                 "kernels.md", "reference.md", "design.md"):
        assert name in names


def test_index_links_every_page():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([\w.-]+\.md)(?:#[\w-]*)?\)", index))
    missing = {p.name for p in PAGES} - linked - {"index.md"}
    assert not missing, f"docs/index.md does not link {sorted(missing)}"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_resolve(page):
    text = page.read_text(encoding="utf-8")
    for target, anchor in re.findall(r"\]\(([\w./-]+\.md)(?:#([\w-]*))?\)", text):
        assert (page.parent / target).is_file(), f"{page.name}: broken link to {target}"
        if anchor:
            heads = (page.parent / target).read_text(encoding="utf-8")
            slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", heads, flags=re.M)}
            assert anchor in slugs, f"{page.name}: no heading #{anchor} in {target}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def test_code_blocks_parser():
    """A closing fence is never part of a block, indented blocks are dedented."""
    text = "x\n```python\n>>> 1 + 1\n2\n```\n- item\n\n  ```python\n  >>> 3\n  3\n  ```\n"
    blocks = list(code_blocks(text))
    assert [b[2] for b in blocks] == [">>> 1 + 1\n2\n", ">>> 3\n3\n"]
    assert [b[0] for b in blocks] == [3, 9]
