"""The explorer's page in a real browser: Playwright for Python driving Debian's Chromium, headless.

Served: a folder of three tiny runs (a picker), each with a t-SNE map, except the 2-D one whose map is its
code. Checked: no console errors, as many points drawn as /api/points returned, hovering and clicking a point
show its image, moving a slider changes the decoded image's pixels (to the server's decoding of the new
code), shift-click draws an interpolation strip, clicking an empty spot of a linear map decodes it, the
picker switches runs, a VAE samples. Issue 22: no stale state (a late answer for an older run is dropped; a
refused word leaves no images; the word shown is the word of the code on screen; a generated image keeps the
test image), errors in words, the text box's limit, unknown words flagged, keyboard selection, the run in the
page's title. Screenshots go to the test's folder and, when AELAB_SCREENSHOT_DIR is set, there too.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import aelab
from aelab.web import BackgroundServer, create_app
from tests.test_predict import TINY_RUNS, tiny_runs

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
TEST_ITEMS = 250  # items of mnist5k's test set on the map: a t-SNE of them takes a second or two


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = aelab.load_dataset("mnist5k")
    every = len(d.x_test) // TEST_ITEMS  # the test set is sorted by class: every k-th item keeps all ten
    data = aelab.Dataset(d.name, d.x_train, d.x_test[::every][:TEST_ITEMS], d.y_train, d.y_test[::every][:TEST_ITEMS],
                         d.classes)
    app = create_app(tiny_runs(tmp_path_factory), data=data, method="tsne", device="cpu", log=None)
    with BackgroundServer(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


def watched_page(browser, url):
    """A fresh page on the explorer at ``url``; at the end, no console error or uncaught exception may have
    happened (a generator for the fixtures below)."""
    context = browser.new_context(viewport={"width": 1400, "height": 950})
    page = context.new_page()
    errors = []
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    yield page
    context.close()
    assert errors == []


@pytest.fixture
def page(browser, served):
    yield from watched_page(browser, served)


def get(url: str, path: str):
    with urllib.request.urlopen(url.rstrip("/") + path, timeout=30) as answer:
        return json.loads(answer.read())


def post(url: str, path: str, body: dict):
    request = urllib.request.Request(url.rstrip("/") + path, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def pixels(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


def screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    if os.environ.get("AELAB_SCREENSHOT_DIR"):
        folder = Path(os.environ["AELAB_SCREENSHOT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / path.name)
    assert path.stat().st_size > 10_000  # a real picture, not an empty page
    return path


def position(page, index: int) -> dict:
    """Where test item ``index`` is drawn, in page pixels."""
    return page.evaluate("(i) => window.aelab.pagePosition(i)", index)


def alone(page, points: list[dict]) -> list[int]:
    """The test items whose points have no other within 10 pixels (so a click hits them alone)."""
    xy = np.array([[p["x"], p["y"]] for p in points])
    at = page.evaluate("(ids) => ids.map((i) => window.aelab.pagePosition(i))", [p["index"] for p in points])
    screen = np.array([[a["x"], a["y"]] for a in at])
    return [points[i]["index"] for i in range(len(points))
            if np.sort(np.hypot(*(screen - screen[i]).T))[1] > 10 and xy[i].any()]


def pick(page, points: list[dict], k: int = 0) -> int:
    """A test item whose point has no other within 10 pixels: the k-th such."""
    return alone(page, points)[k]


def test_map_select_slider_interpolation(page, served, tmp_path):
    run = page.get_attribute("body", "data-run")
    points = get(served, f"/api/points?run={run}")["points"]
    assert int(page.get_attribute("#map", "data-points")) == len(points) == TEST_ITEMS

    # hover: the item's image in the tooltip
    index = pick(page, points)
    at = position(page, index)
    page.mouse.move(at["x"], at["y"])
    sync_api.expect(page.locator("#tooltip")).to_be_visible()
    sync_api.expect(page.locator("#tooltip-img")).to_have_attribute("src", re.compile(f"/api/images/{index}\\b"))

    # click: its image, reconstruction and code
    page.mouse.click(at["x"], at["y"])
    sync_api.expect(page.locator("#sel-title")).to_contain_text(f"#{index}")
    item = get(served, f"/api/items/{index}?run={run}")
    sync_api.expect(page.locator("#sel-image")).to_have_attribute("src", item["image"])
    sync_api.expect(page.locator("#sel-recon")).to_have_attribute("src", item["reconstruction"])
    sync_api.expect(page.locator("#decoded")).to_have_attribute("src", re.compile("^data:image/png"))
    before = page.get_attribute("#decoded", "src")
    np.testing.assert_array_equal(pixels(before), pixels(item["reconstruction"]))  # the code, decoded

    # a slider per dimension (4 for this run); moving one redraws the decoded image
    sliders = page.locator("#sliders input[type=range]")
    assert sliders.count() == TINY_RUNS[run][1]["latent_dim"]
    sliders.nth(0).focus()
    page.keyboard.press("End")  # to the slider's maximum: an input event, as a drag gives
    sync_api.expect(page.locator("#decoded")).not_to_have_attribute("src", before)
    code = page.evaluate("window.aelab.state.code")
    wanted = post(served, f"/api/decode?run={run}", {"z": code})["image"]
    sync_api.expect(page.locator("#decoded")).to_have_attribute("src", wanted)  # the latest code's image
    after = pixels(page.get_attribute("#decoded", "src"))
    assert np.abs(after.astype(int) - pixels(before)).max() > 0
    assert code[0] != item["z"][0] and code[1:] == pytest.approx(item["z"][1:])

    # shift-click a second point: a decoded strip between the two
    second = pick(page, points, 1)
    at2 = position(page, second)
    page.keyboard.down("Shift")
    page.mouse.click(at2["x"], at2["y"])
    page.keyboard.up("Shift")
    sync_api.expect(page.locator("#strip img")).to_have_count(10)
    sync_api.expect(page.locator("#strip-hint")).to_contain_text(f"from #{index} to #{second}")
    page.mouse.move(at["x"], at["y"])
    sync_api.expect(page.locator("#tooltip")).to_be_visible()
    screenshot(page, tmp_path, "explorer-conv")


def test_picker_vae_sample_and_empty_spot(page, served, tmp_path):
    runs = get(served, "/api/runs")["runs"]
    picker = page.locator("#run-picker")
    sync_api.expect(picker).to_be_visible()
    assert picker.locator("option").count() == len(runs) == 3

    # the VAE: 20 dimensions, so a chooser shows 16 sliders; it samples from its prior
    picker.select_option("vae")
    page.wait_for_selector("body[data-run='vae']")
    points = get(served, "/api/points?run=vae")["points"]
    assert int(page.get_attribute("#map", "data-points")) == len(points)
    sync_api.expect(page.locator("#dim-chooser")).to_be_visible()
    assert page.locator("#sliders input[type=range]").count() == 16
    sync_api.expect(page.locator("#sample-panel")).to_be_visible()
    page.click("#sample-button")
    sync_api.expect(page.locator("#samples img")).to_have_count(8)
    index = pick(page, points)
    at = position(page, index)
    page.mouse.click(at["x"], at["y"])
    sync_api.expect(page.locator("#sel-title")).to_contain_text(f"#{index}")
    page.select_option("#dim-chooser", index=2)  # z17 to z20
    assert page.locator("#sliders input[type=range]").count() == 4
    screenshot(page, tmp_path, "explorer-vae")

    # the 2-D run: its map is the code, so a click on an empty spot decodes that position
    picker.select_option("dense2")
    page.wait_for_selector("body[data-run='dense2']")
    sync_api.expect(page.locator("#sample-panel")).to_be_hidden()
    assert int(page.get_attribute("#map", "data-points")) == len(get(served, "/api/points?run=dense2")["points"])
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + 6, box["y"] + 6)  # the corner: outside the points' bounds
    sync_api.expect(page.locator("#sel-title")).to_contain_text("map position")
    sync_api.expect(page.locator("#decoded")).to_have_attribute("src", re.compile("^data:image/png"))
    code = page.evaluate("window.aelab.state.code")
    xy = page.evaluate("window.aelab.state.marker")
    assert code == pytest.approx(xy, rel=1e-5)  # the map of a 2-D code is the code itself
    wanted = post(served, "/api/decode?run=dense2", {"z": code})["image"]
    sync_api.expect(page.locator("#decoded")).to_have_attribute("src", wanted)
    screenshot(page, tmp_path, "explorer-dense2")


# ---------------------------------------------------------------------------------------------- multimodal
@pytest.fixture(scope="module")
def served_multimodal(tmp_path_factory):
    from tests.test_web_multimodal import tiny_multimodal  # trains the tiny multimodal run once per session
    path, data = tiny_multimodal(tmp_path_factory)
    with BackgroundServer(create_app(path, data=data, method="pca", device="cpu", log=None)) as url:
        yield url


@pytest.fixture
def mm_page(browser, served_multimodal):
    yield from watched_page(browser, served_multimodal)


def test_multimodal_word_to_images_and_image_to_word(mm_page, served_multimodal, tmp_path):
    page, url = mm_page, served_multimodal
    info = get(url, "/api/info")
    points = get(url, "/api/points")["points"]
    assert int(page.get_attribute("#map", "data-points")) == len(points) == info["test_count"]
    sync_api.expect(page.locator("#map-title")).to_contain_text("test codes of the images")
    sync_api.expect(page.locator("#text-panel")).to_be_visible()

    # type a word: the images generated from it, as the server makes them
    box = page.locator("#text-input")
    box.press_sequentially("seven")
    page.wait_for_selector("body[data-text='seven']")
    sync_api.expect(page.locator("#text-images img")).to_have_count(8)
    seven = post(url, "/api/text", {"text": "seven", "n": 8, "seed": 0})
    assert [img.get_attribute("src") for img in page.locator("#text-images img").all()] == seven["images"]
    sync_api.expect(page.locator("#text-word")).to_contain_text(f'reads back as "{seven["word"]}"')
    # another word: the images change
    box.fill("")
    box.press_sequentially("one")
    page.wait_for_selector("body[data-text='one']")
    one = post(url, "/api/text", {"text": "one", "n": 8, "seed": 0})
    sync_api.expect(page.locator("#text-images img").first).to_have_attribute("src", one["images"][0])
    assert one["images"][0] != seven["images"][0]
    assert np.abs(pixels(one["images"][0]).astype(int) - pixels(seven["images"][0])).max() > 0
    # a character outside the alphabet is refused in the page, without a request
    box.press_sequentially("/")
    sync_api.expect(page.locator("#text-word")).to_contain_text("not in the model's alphabet")
    box.fill("one")
    # clicking a generated image loads its code into the sliders
    page.locator("#text-images img").nth(0).click()
    sync_api.expect(page.locator("#sel-title")).to_contain_text('generated from "one"')
    assert page.evaluate("window.aelab.state.code") == pytest.approx(one["z"][0])

    # pick an image on the map: the word decoded from its code, the nearest recordings' digits
    index = pick(page, points)
    at = position(page, index)
    page.mouse.click(at["x"], at["y"])
    sync_api.expect(page.locator("#sel-title")).to_contain_text(f"#{index}")
    item = get(url, f"/api/items/{index}")
    sync_api.expect(page.locator("#sel-word")).to_have_text(item["word"] or "(nothing)")
    sync_api.expect(page.locator("#sel-text")).to_contain_text(item["text"])
    if item.get("nearest_recordings") is not None:
        chips = page.locator("#sel-recordings button")
        sync_api.expect(chips).to_have_count(len(item["nearest_recordings"]))
        assert [c.text_content() for c in chips.all()] == [str(r["digit"]) for r in item["nearest_recordings"]]
    else:
        sync_api.expect(page.locator("#sel-rec-row")).to_be_hidden()
    box.fill("")
    box.press_sequentially("the number six")
    page.wait_for_selector("body[data-text='the number six']")
    screenshot(page, tmp_path, "explorer-multimodal")


# ---------------------------------------------------------------------------------------------- issue 22
def test_a_late_answer_for_an_older_run_is_dropped(page, served, tmp_path):
    """Defect 1: two quick picks (vae, then dense2) whose first answers come last: the page shows dense2, the
    run the picker names, and its requests go there."""
    held = []
    page.route(re.compile(r"/api/(info|points)\?run=vae$"), lambda route: held.append(route))
    settled = int(page.get_attribute("body", "data-settled") or 0)
    page.select_option("#run-picker", "vae")
    for _ in range(500):  # until the page has asked for vae's info and points (the answers are held)
        if len(held) == 2:
            break
        page.wait_for_timeout(20)
    assert len(held) == 2
    page.select_option("#run-picker", "dense2")
    page.wait_for_selector("body[data-run='dense2']")
    for route in held:
        route.continue_()  # vae's answers arrive now, after dense2's
    # until both loads have settled (or, as before issue 22, the stale vae answers were shown)
    page.wait_for_function("(n) => Number(document.body.dataset.settled || 0) >= n || "
                           "document.body.dataset.run === 'vae'", arg=settled + 2)
    assert page.get_attribute("body", "data-run") == "dense2"
    assert page.locator("#run-picker").input_value() == "dense2"
    sync_api.expect(page.locator("#run-info")).to_contain_text("latent 2 ·")
    points = get(served, "/api/points?run=dense2")["points"]
    assert int(page.get_attribute("#map", "data-points")) == len(points)
    assert page.locator("#sliders input[type=range]").count() == 2
    index = pick(page, points)
    at = position(page, index)
    page.mouse.click(at["x"], at["y"])
    item = get(served, f"/api/items/{index}?run=dense2")  # the requests go to dense2
    sync_api.expect(page.locator("#sel-image")).to_have_attribute("src", item["image"])
    sync_api.expect(page.locator("#sel-recon")).to_have_attribute("src", item["reconstruction"])
    screenshot(page, tmp_path, "issue22-1-picker-race")


def test_the_page_title_names_the_run(page):
    assert page.title() == "conv · aelab latent-space explorer"
    page.select_option("#run-picker", "vae")
    page.wait_for_selector("body[data-run='vae']")
    assert page.title() == "vae · aelab latent-space explorer"


def test_keyboard_moves_between_points_and_selects(page, served, tmp_path):
    """Arrow keys move a cursor to the nearest point in their direction (within 45 degrees of it), Enter selects."""
    run = page.get_attribute("body", "data-run")
    points = get(served, f"/api/points?run={run}")["points"]
    ids = [p["index"] for p in points]
    at = page.evaluate("(ids) => ids.map((i) => window.aelab.pagePosition(i))", ids)
    xy = np.array([[a["x"], a["y"]] for a in at])
    box = page.locator("#map").bounding_box()
    inside = (xy[:, 0] >= box["x"]) & (xy[:, 0] <= box["x"] + box["width"]) & \
             (xy[:, 1] >= box["y"]) & (xy[:, 1] <= box["y"] + box["height"])

    def step(i: int, dx: int, dy: int) -> int:  # the rule, in numpy: the known answer
        e = xy - xy[i]
        along, across = e @ [dx, dy], np.abs(e[:, 0] * dy - e[:, 1] * dx)
        ok = (along > 0) & (across <= along) & inside
        ok[i] = False
        return int(np.where(ok, (e ** 2).sum(1), np.inf).argmin()) if ok.any() else i

    centre = np.array([box["x"] + box["width"] / 2, box["y"] + box["height"] / 2])
    cursor = int(np.where(inside, ((xy - centre) ** 2).sum(1), np.inf).argmin())  # where the keyboard starts
    page.focus("#map")
    page.keyboard.press("ArrowRight")  # the first press puts the cursor on the point nearest the centre
    sync_api.expect(page.locator("#tooltip-label")).to_contain_text(f"#{ids[cursor]}")
    for key, (dx, dy) in [("ArrowRight", (1, 0)), ("ArrowRight", (1, 0)), ("ArrowDown", (0, 1)),
                          ("ArrowLeft", (-1, 0)), ("ArrowUp", (0, -1))]:
        page.keyboard.press(key)
        cursor = step(cursor, dx, dy)
        sync_api.expect(page.locator("#tooltip-label")).to_contain_text(f"#{ids[cursor]} ")
    page.keyboard.press("Enter")
    sync_api.expect(page.locator("#sel-title")).to_contain_text(f"test item #{ids[cursor]} ")
    item = get(served, f"/api/items/{ids[cursor]}?run={run}")
    sync_api.expect(page.locator("#sel-image")).to_have_attribute("src", item["image"])
    screenshot(page, tmp_path, "issue22-keyboard")


@pytest.fixture(scope="module")
def mm_predictor(tmp_path_factory):
    from tests.test_web_multimodal import tiny_multimodal
    return aelab.Predictor.from_run(tiny_multimodal(tmp_path_factory)[0], device="cpu")


@pytest.fixture(scope="module")
def mm_data(tmp_path_factory):
    from tests.test_web_multimodal import tiny_multimodal
    return tiny_multimodal(tmp_path_factory)[1]


def shown_word(word: str) -> str:
    return word or "(nothing)"


def test_a_rejected_word_leaves_no_images(mm_page, served_multimodal, tmp_path):
    """Defect 2: "eight!" is refused in the page; the images of "eight" must not stay on screen, clickable."""
    page = mm_page
    box = page.locator("#text-input")
    box.press_sequentially("eight")
    page.wait_for_selector("body[data-text='eight']")
    sync_api.expect(page.locator("#text-images img")).to_have_count(8)
    box.press_sequentially("!")
    sync_api.expect(page.locator("#text-word")).to_contain_text("\"!\" is not in the model's alphabet")
    sync_api.expect(page.locator("#text-images img")).to_have_count(0)
    assert page.get_attribute("body", "data-text") is None
    screenshot(page, tmp_path, "issue22-2-rejected-word")
    box.press("Backspace")  # "eight" again: its images come back
    page.wait_for_selector("body[data-text='eight']")
    sync_api.expect(page.locator("#text-images img")).to_have_count(8)


def test_clicking_a_generated_image_keeps_the_test_image_and_the_word(mm_page, served_multimodal, tmp_path):
    """Defect 3: the test image stays, the generated image is captioned as such, the decoded word is shown."""
    page, url = mm_page, served_multimodal
    points = get(url, "/api/points")["points"]
    index = pick(page, points)
    at = position(page, index)
    page.mouse.click(at["x"], at["y"])
    item = get(url, f"/api/items/{index}")
    sync_api.expect(page.locator("#sel-image")).to_have_attribute("src", item["image"])
    page.locator("#text-input").press_sequentially("one")
    page.wait_for_selector("body[data-text='one']")
    one = post(url, "/api/text", {"text": "one", "n": 8, "seed": 0})
    page.locator("#text-images img").nth(2).click()
    sync_api.expect(page.locator("#sel-title")).to_contain_text('generated from "one" (draw 2)')
    sync_api.expect(page.locator("#sel-image")).to_have_attribute("src", item["image"])  # kept
    sync_api.expect(page.locator("#sel-image-caption")).to_have_text("test image")
    sync_api.expect(page.locator("#sel-recon")).to_have_attribute("src", one["images"][2])
    sync_api.expect(page.locator("#sel-recon-caption")).to_have_text('generated from "one" (draw 2)')
    word = post(url, "/api/decode", {"z": one["z"][2]})["word"]
    sync_api.expect(page.locator("#sel-word-row")).to_be_visible()
    sync_api.expect(page.locator("#sel-word")).to_have_text(shown_word(word))
    sync_api.expect(page.locator("#decoded")).to_have_attribute("src", one["images"][2])
    screenshot(page, tmp_path, "issue22-3-generated-image")
    page.mouse.click(at["x"], at["y"])  # the item again: its reconstruction, captioned so
    sync_api.expect(page.locator("#sel-recon-caption")).to_have_text("reconstruction")
    sync_api.expect(page.locator("#sel-recon")).to_have_attribute("src", item["reconstruction"])


def test_the_decoded_word_follows_the_code_on_screen(mm_page, served_multimodal, mm_predictor, mm_data, tmp_path):
    """Defect 4: after a slider, an interpolation step or a decoded map position, the word shown is the word
    of the code on screen (known answers from the Predictor), not the selected item's."""
    page, url, p = mm_page, served_multimodal, mm_predictor
    points = get(url, "/api/points")["points"]
    index = pick(page, points)
    at = position(page, index)
    page.mouse.click(at["x"], at["y"])
    item = get(url, f"/api/items/{index}")
    sync_api.expect(page.locator("#sel-word")).to_have_text(shown_word(item["word"]))

    # a slider to an end that changes the word
    sliders = page.locator("#sliders input[type=range]")
    ends = []
    for d in range(sliders.count()):
        for key, attr in (("End", "max"), ("Home", "min")):
            code = list(item["z"])
            code[d] = float(sliders.nth(d).get_attribute(attr))
            ends.append((d, key, p.decode_text(torch.tensor([code]))[0]))
    d, key, _ = next(e for e in ends if e[2] != item["word"])
    sliders.nth(d).focus()
    page.keyboard.press(key)
    code = page.evaluate("window.aelab.state.code")  # as the slider set it (its step may round the end)
    word = p.decode_text(torch.tensor([code]))[0]
    assert code[d] != item["z"][d] and word != item["word"]
    sync_api.expect(page.locator("#sel-word")).to_have_text(shown_word(word))
    screenshot(page, tmp_path, "issue22-4-word-after-slider")

    # an interpolation step: the last one is the second item's code, whose word differs
    words = p.decode_text(p.encode(mm_data.x_test["image"]))  # every test image's word
    second = next(i for i in alone(page, points) if words[i] != item["word"] and i != index)
    at2 = position(page, second)
    page.keyboard.down("Shift")
    page.mouse.click(at2["x"], at2["y"])
    page.keyboard.up("Shift")
    sync_api.expect(page.locator("#strip img")).to_have_count(10)
    page.locator("#strip img").nth(9).click()
    page.wait_for_function("(z) => window.aelab.state.code[0] !== z", arg=code[0])
    step = page.evaluate("window.aelab.state.code")  # the second item's code
    word = p.decode_text(torch.tensor([step]))[0]
    assert word != item["word"]
    sync_api.expect(page.locator("#sel-word")).to_have_text(shown_word(word))

    # a decoded map position (the PCA map is linear): the corner, far from every point
    page.evaluate("window.scrollTo(0, 0)")  # the strip's click scrolled the page
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + 6, box["y"] + 6)
    sync_api.expect(page.locator("#sel-title")).to_contain_text("map position")
    code = page.evaluate("window.aelab.state.code")
    sync_api.expect(page.locator("#sel-word")).to_have_text(shown_word(p.decode_text(torch.tensor([code]))[0]))
    screenshot(page, tmp_path, "issue22-4-word-at-map-position")


def test_a_text_too_long_is_said_in_words_and_not_cut(mm_page, served_multimodal, tmp_path):
    """Defect 5: the box shows its limit; a long text (typed past the limit by a script, or pasted) is kept
    whole and refused in words, never as a raw validation list; the server's validation errors read as words."""
    page = mm_page
    box = page.locator("#text-input")
    assert box.get_attribute("maxlength") == "16" and "at most 16 characters" in box.get_attribute("placeholder")
    sync_api.expect(page.locator("#text-count")).to_have_text("0 / 16")
    box.press_sequentially("seven")
    page.wait_for_selector("body[data-text='seven']")
    sync_api.expect(page.locator("#text-count")).to_have_text("5 / 16")
    long = "seven " * 83 + "se"  # 500 characters
    box.fill("")
    page.evaluate("""(text) => {
        const box = document.getElementById("text-input"), data = new DataTransfer();
        data.setData("text/plain", text);
        box.focus();
        box.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data, bubbles: true, cancelable: true}));
    }""", long)
    assert box.input_value() == long  # kept whole, not cut to 16 without a word
    sync_api.expect(page.locator("#text-word")).to_have_text(
        "the text has 500 characters; this model reads at most 16: shorten it")
    sync_api.expect(page.locator("#text-count")).to_have_text("500 / 16")
    sync_api.expect(page.locator("#text-images img")).to_have_count(0)
    screenshot(page, tmp_path, "issue22-5-long-paste")
    # the server's own refusal of a long text (a list of validation errors) as the page says it: words, no JSON
    request = urllib.request.Request(served_multimodal.rstrip("/") + "/api/text",
                                     data=json.dumps({"text": "x" * 20}).encode(),
                                     headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    detail = json.loads(refused.value.read())["detail"]
    assert isinstance(detail, list)
    message = page.evaluate("(detail) => window.aelab.inWords(detail, 422)", detail)
    assert message == "text: String should have at most 16 characters"


def test_an_unknown_word_is_flagged_and_still_decoded(mm_page, served_multimodal, tmp_path):
    page, url = mm_page, served_multimodal
    box = page.locator("#text-input")
    box.press_sequentially("neuf")
    page.wait_for_selector("body[data-text='neuf']")
    sync_api.expect(page.locator("#text-unknown")).to_be_visible()
    sync_api.expect(page.locator("#text-unknown")).to_contain_text('"neuf" is not a word of the texts the model was '
                                                                   'trained on')
    neuf = post(url, "/api/text", {"text": "neuf", "n": 8, "seed": 0})
    assert [img.get_attribute("src") for img in page.locator("#text-images img").all()] == neuf["images"]
    sync_api.expect(page.locator("#text-word")).to_contain_text(f'reads back as "{neuf["word"]}"')
    screenshot(page, tmp_path, "issue22-unknown-word")
    box.fill("")
    box.press_sequentially("nine")  # a word of the training texts: no flag
    page.wait_for_selector("body[data-text='nine']")
    sync_api.expect(page.locator("#text-unknown")).to_be_hidden()


def _luminance(hex_colour: str) -> float:
    """WCAG 2 relative luminance of '#rrggbb'."""
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def test_every_digit_chip_is_readable(page):
    """Issue 22: the digit-8 chip was white on yellow-green (contrast about 2:1). The text colour the page gives each
    digit's chip contrasts with the chip by at least 4.4:1 (WCAG 2 ratio; the palette's worst colour allows 4.44)."""
    pairs = page.evaluate("[...Array(10).keys()].map((d) => [window.aelab.colour(d), window.aelab.ink(window.aelab.colour(d))])")
    for digit, (chip, text) in enumerate(pairs):
        low, high = sorted((_luminance(chip), _luminance(text if len(text) == 7 else "#" + text[1] * 2 + text[2] * 2
                                                                     + text[3] * 2)))
        assert (high + 0.05) / (low + 0.05) >= 4.4, (digit, chip, text)
