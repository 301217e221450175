"""The explorer over a folder of runs as ``aelab tour`` leaves it (issue 22), in Debian's Chromium.

The folder holds a copy of the tiny conv run with an evaluation.json at chance level, a tiny sparse run with a
wide top-k code, and a comparison report (``report.html``) beside them. Checked: the header says in sentences
(those of :func:`aelab.evaluation.chance.chance_warnings`) that the run learned nothing, and says nothing for a
run without such an evaluation; the header links the comparison report, whose links to each run's report lead
there; a sparse run's sliders are the selected item's active units (the most spread units are zero for it).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import aelab
from aelab.evaluation import read_evaluation
from aelab.evaluation.chance import chance_warnings
from tests.test_predict import tiny_runs
from tests.test_web_browser import (CHROMIUM, alone, browser, get, position, screenshot, sync_api,  # noqa: F401
                                    watched_page)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH")
AT_CHANCE = {"linear_probe_accuracy": 0.11, "knn_accuracy": 0.12, "num_classes": 10}
SPARSE_UNITS, SPARSE_K = 64, 6
COMPARISON = ('<!doctype html><title>comparison</title><h1>Comparing 2 runs</h1>'
              '<a id="to-conv" href="conv/report.html">conv</a> <a href="sparse/report.html">sparse</a>')


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("tour-like")
    shutil.copytree(tiny_runs(tmp_path_factory) / "conv", out / "conv")
    (out / "conv" / "evaluation.json").write_text(json.dumps(AT_CHANCE))  # newer than the weights: current
    (out / "conv" / "report.html").write_text("<!doctype html><title>conv</title><h1>The conv run's report</h1>")
    aelab.train("sparse", "mnist5k", out=out / "sparse", epochs=1, batch_size=64, lr=3e-3, latent_dim=SPARSE_UNITS,
                penalty="topk", k=SPARSE_K, report=False, progress=False, log=None)
    (out / "report.html").write_text(COMPARISON)
    return out


@pytest.fixture(scope="module")
def served(folder):
    with aelab.web.BackgroundServer(aelab.web.create_app(folder, method="pca", device="cpu", log=None)) as url:
        yield url


@pytest.fixture
def page(browser, served):  # noqa: F811
    yield from watched_page(browser, served)


def test_the_header_says_when_a_run_learned_nothing(page, served, folder, tmp_path):
    want = chance_warnings(AT_CHANCE, 10, lr=3e-3)
    assert want and "chance" in want[0]  # the sentences the header must show, each with its fix
    warnings = page.locator("#run-warnings li")
    sync_api.expect(page.locator("#run-warnings")).to_be_visible()
    assert [w.text_content() for w in warnings.all()] == [f"This run learned little: {w}" for w in want]
    screenshot(page, tmp_path, "issue22-learned-nothing")
    page.select_option("#run-picker", "sparse")  # whatever the sparse run's own evaluation says, no more
    page.wait_for_selector("body[data-run='sparse']")
    own = chance_warnings(read_evaluation(folder / "sparse"), 10, lr=3e-3) if read_evaluation(folder / "sparse") else []
    sync_api.expect(warnings).to_have_count(len(own))
    assert page.locator("#run-warnings").is_hidden() == (own == [])


def test_the_comparison_report_is_linked(page, served, tmp_path):
    link = page.locator("#folder-files a")
    sync_api.expect(link).to_have_count(1)
    assert link.get_attribute("href") == "/reports/report.html"
    sync_api.expect(link).to_contain_text("comparison")
    with page.context.expect_page() as opened:
        link.click()
    report = opened.value
    report.wait_for_load_state()
    assert report.locator("h1").text_content() == "Comparing 2 runs"
    report.click("#to-conv")  # a relative link of the report: the run's own report
    report.wait_for_url("**/reports/conv/report.html")
    assert report.locator("h1").text_content() == "The conv run's report"
    report.close()


def test_a_sparse_runs_sliders_are_the_items_active_units(page, served, tmp_path):
    page.select_option("#run-picker", "sparse")
    page.wait_for_selector("body[data-run='sparse']")
    chooser = page.locator("#dim-chooser")
    sync_api.expect(chooser).to_be_visible()
    assert chooser.locator("option:checked").text_content() == "this item's active units"
    points = get(served, "/api/points?run=sparse")["points"]
    index = alone(page, points)[0]
    at = position(page, index)
    page.mouse.click(at["x"], at["y"])
    sync_api.expect(page.locator("#sel-title")).to_contain_text(f"#{index} ")
    z = np.array(get(served, f"/api/items/{index}?run=sparse")["z"])
    active = np.flatnonzero(np.abs(z) > 1e-6)
    want = sorted(active.tolist(), key=lambda k: -abs(z[k]))[:16]
    assert 0 < len(active) <= SPARSE_K  # top-k: at most k units of 64 fire
    sliders = page.locator("#sliders input[type=range]")
    sync_api.expect(sliders).to_have_count(len(want))
    assert [int(s.get_attribute("data-dim")) for s in sliders.all()] == want
    assert all(float(s.input_value()) != 0 for s in sliders.all())
    sync_api.expect(page.locator("#code-hint")).to_have_text(
        f"{len(active)} of {SPARSE_UNITS} units active in this code")
    # the most spread units, still one choice away
    chooser.select_option(label="the 16 most spread")
    sync_api.expect(sliders).to_have_count(16)
    chooser.select_option(label="this item's active units")
    sync_api.expect(sliders).to_have_count(len(want))
    screenshot(page, tmp_path, "issue22-sparse-active-units")
