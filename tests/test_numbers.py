"""Measured numbers live in one place (issue 17, item 8): benchmarks/README.md, section Results.

A measured figure is a decimal with at least three significant digits that is not a whole number (0.980,
0.00624, 88.09, 1.51x): settings (256, 1e-3, 0.5) and round values never count. A docstring, a block of
comments or a README paragraph that holds two or more of the Results' figures is a copy of a measurement, which
goes stale when the measurement is made again: it should say where the number is instead ("measured:
benchmarks/README.md, Results, Multimodal"). One figure alone is not flagged: a coincidence (0.888 is both
the raw-pixel probe on full MNIST and logistic regression on mnist5k) must not fail the suite.
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS_HEADING = "\n## Results\n"
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.]*\d)")  # 0.980, 1.51 of 1.51x; not parts of 1.2.3 or v2.13a1
COPIES = 2  # figures of Results in one text that make it a copy


def is_measured_figure(token: str) -> bool:
    """A decimal with at least three significant digits that is not a whole number."""
    return len(token.replace(".", "").lstrip("0")) >= 3 and float(token) != int(float(token))


def measured_figures(markdown: str) -> set[str]:
    """The measured figures of the Results section of a benchmarks README, as written."""
    if RESULTS_HEADING not in markdown:
        raise AssertionError("benchmarks/README.md has no '## Results' section: the one place for measured numbers")
    return {t for t in DECIMAL.findall(markdown.split(RESULTS_HEADING, 1)[1]) if is_measured_figure(t)}


def prose_of_python(source: str):
    """(line, text) of every docstring and every block of consecutive comment lines of a module."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield node.body[0].lineno, doc
    block, start, last = [], 0, -1
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        if tok.start[0] != last + 1 and block:
            yield start, "\n".join(block)
            block = []
        if not block:
            start = tok.start[0]
        block.append(tok.string)
        last = tok.start[0]
    if block:
        yield start, "\n".join(block)


def copies(texts, measured: set[str]) -> list[tuple[int, list[str]]]:
    """(line, the figures) of every text holding COPIES or more of the measured figures."""
    found = []
    for line, text in texts:
        figures = sorted(set(DECIMAL.findall(text)) & measured)
        if len(figures) >= COPIES:
            found.append((line, figures))
    return found


@pytest.fixture(scope="module")
def measured() -> set[str]:
    return measured_figures((ROOT / "benchmarks" / "README.md").read_text())


def test_the_results_section_holds_the_measurements(measured):
    """Known figures of each table are read (so the checks below are not vacuous)."""
    assert {"0.980", "0.931", "88.09", "0.00624", "1.51", "105.18"} <= measured
    assert "1.00" not in measured and "0.90" not in measured  # a whole number, two significant digits
    assert len(measured) >= 50


@pytest.mark.parametrize("text, flagged", [
    ('"""moe 0.980 / 1.000 / 0.957 / 0.931 in 374 s."""', ["0.931", "0.957", "0.980"]),
    ('"""measured: benchmarks/README.md, Results, Multimodal."""', []),
    ('"""The audio judge reads 0.995 of them."""', []),  # one figure: maybe a coincidence
    ("x = 1  # 1.51x against 1.53x\n# (bare loop)\n", ["1.51", "1.53"]),  # one block of comments
    ("x = 1  # 1.51x\n\ny = 2  # 1.53x\n", []),  # two blocks, one figure each
    ('"""lr 2e-3, batch 256, beta 0.5, version 2.13.0"""', []),  # settings and versions are not measurements
])
def test_a_copy_is_two_measured_figures_in_one_text(text, flagged):
    measured = {"0.980", "0.957", "0.931", "0.995", "1.51", "1.53", "2.13"}
    found = copies(prose_of_python(text), measured)
    assert [figures for _, figures in found] == ([flagged] if flagged else [])


def test_no_docstring_or_comment_in_the_package_copies_a_measurement(measured):
    found = [f"src/aelab/{path.relative_to(ROOT / 'src' / 'aelab').as_posix()}:{line}: {', '.join(figures)}"
             for path in sorted((ROOT / "src" / "aelab").rglob("*.py"))
             for line, figures in copies(prose_of_python(path.read_text()), measured)]
    assert not found, ("measured figures copied from benchmarks/README.md (Results); say where they are "
                       "instead:\n" + "\n".join(found))


def test_the_readme_points_to_the_measurements_instead_of_copying_them(measured):
    readme = (ROOT / "README.md").read_text()
    paragraphs = [(readme.count("\n", 0, readme.index(p)) + 1, p) for p in readme.split("\n\n") if p.strip()]
    found = copies(paragraphs, measured)
    assert not found, f"README paragraphs (line, figures) that copy benchmarks/README.md's Results: {found}"
    assert "benchmarks/README.md#results" in readme
