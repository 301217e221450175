"""What we show a user runs: the tutorial notebook, executed top to bottom, and every ``examples/*.py`` script.

Both run in a fresh temporary working folder with the test environment (offline, cache in the test's folder)
and one thread per process (OMP_NUM_THREADS=1: their models are small, and on a shared 2-core machine two
spinning threads per process made the example script 5x slower). A cell that raises fails the test with the
cell's traceback; so does a script's non-zero exit.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NOTEBOOK = EXAMPLES / "autoencoders_tutorial.ipynb"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))


@pytest.fixture
def one_thread_env(monkeypatch):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(name, "1")


def test_the_notebook_is_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the tutorial has no code cells"
    stale = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not stale, f"cells {stale} hold stored outputs; clear them (jupyter nbconvert --clear-output --inplace)"
    assert nb.metadata.kernelspec.name == "python3"
    prose = sum(len(c.source) for c in nb.cells if c.cell_type == "markdown")
    assert prose > sum(len(c.source) for c in code), "the tutorial should explain more than it codes"


@pytest.mark.slow  # about 2 to 3 minutes on 2 shared CPU cores
def test_the_tutorial_notebook_runs_top_to_bottom(tmp_path, monkeypatch, one_thread_env):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's run folders (tempfile.mkdtemp) land in tmp_path
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # first, a cell of the test's own: which interpreter the kernel runs (it must be this one, the venv's)
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    assert nb.cells[0].outputs[0].text.strip() == sys.executable
    assert list(tmp_path.glob("aelab-tutorial-*")), "the notebook's runs should be in the test's folder"
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    shown = sum(c.source.count("show(") for c in nb.cells if c.cell_type == "code") - 1  # less `def show(`
    assert len(images) == shown, f"the tutorial showed {len(images)} of its {shown} figures inline"
    text = "".join(o.get("text", "") for o in outputs)
    assert "test accuracy of LogisticRegression" in text and "nats per image" in text


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_example_script_runs(script, tmp_path, one_thread_env):
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{script.name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert done.stdout.strip(), f"{script.name} printed nothing"
