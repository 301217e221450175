"""Sound you can see (issue 22): the explorer on a multimodal run with audio, in Debian's Chromium.

The tiny multimodal run of tests/test_web_multimodal.py (image, audio and text when the shared data folder holds
the FSDD MFCC file; these tests are skipped without it), served with a PCA map. Checked with known answers from
the API (itself checked against the Predictor in test_web_multimodal.py): each test recording is drawn on the
map among the image codes; picking one (from the list, from the chips of an image's or a text's nearest
recordings, or on the map) shows its MFCC picture, the audio decoder's picture of its code, and the image and
word its code gives, and puts its code on screen.
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.test_web_browser import (CHROMIUM, alone, browser, get, pixels, position, post, screenshot,  # noqa: F401
                                    served_multimodal, sync_api, watched_page)
from tests.test_web_multimodal import needs_audio

pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH"), needs_audio]


@pytest.fixture
def page(browser, served_multimodal):  # noqa: F811
    yield from watched_page(browser, served_multimodal)


def recording_shown(page, url: str, r: int) -> dict:
    """Wait until recording ``r`` is shown; check what the page shows of it against the API's answer."""
    page.wait_for_selector(f"body[data-recording='{r}']")
    rec = get(url, f"/api/recordings/{r}")
    sync_api.expect(page.locator("#rec-mfcc")).to_have_attribute("src", rec["mfcc"])
    sync_api.expect(page.locator("#rec-recon")).to_have_attribute("src", rec["reconstruction"])
    sync_api.expect(page.locator("#rec-image")).to_have_attribute("src", rec["image"])
    sync_api.expect(page.locator("#rec-word")).to_have_text(rec["word"] or "(nothing)")
    name = f"recording #{rec['recording']} · spoken {rec['digit']}"
    sync_api.expect(page.locator("#rec-mfcc-caption")).to_have_text(f"MFCCs of {name}")
    # its code is the code on screen: the decoded figure is the image from it, the word follows
    sync_api.expect(page.locator("#sel-title")).to_have_text(name)
    sync_api.expect(page.locator("#decoded")).to_have_attribute("src", rec["image"])
    sync_api.expect(page.locator("#sel-word")).to_have_text(rec["word"] or "(nothing)")
    assert page.evaluate("window.aelab.state.code") == pytest.approx(rec["z"])
    return rec


def test_recordings_on_the_map_and_picked_from_the_list(page, served_multimodal, tmp_path):
    url = served_multimodal
    listing = get(url, "/api/recordings")["recordings"]
    sync_api.expect(page.locator("#sound-panel")).to_be_visible()
    assert int(page.get_attribute("#map", "data-recordings")) == len(listing)  # every recording, in view
    sync_api.expect(page.locator("#map-title")).to_contain_text(f"{len(listing)} test recordings")
    assert page.locator("#rec-picker option").count() == len(listing) + 1
    # the recording's diamond is drawn where the API puts its code on the map
    r = 7
    at = page.evaluate("(r) => window.aelab.recordingPosition(r)", r)
    origin = page.evaluate("window.aelab.pagePosition(0)")
    x0, y0 = get(url, "/api/points")["points"][0]["x"], get(url, "/api/points")["points"][0]["y"]
    scale = page.evaluate("""() => { const s = window.aelab.state, b = s.bounds,
        rect = document.getElementById('map').getBoundingClientRect();
        return Math.min(rect.width / (b.x1 - b.x0), rect.height / (b.y1 - b.y0)); }""")
    assert at["x"] - origin["x"] == pytest.approx((listing[r]["x"] - x0) * scale, abs=0.5)
    assert at["y"] - origin["y"] == pytest.approx(-(listing[r]["y"] - y0) * scale, abs=0.5)

    page.select_option("#rec-picker", str(r))
    rec = recording_shown(page, url, r)
    mfcc = pixels(rec["mfcc"])
    assert mfcc.shape == (13, 32, 3) and len(np.unique(mfcc.reshape(-1, 3), axis=0)) > 20  # a picture, not a blank
    screenshot(page, tmp_path, "issue22-sound-recording")

    # the layer can be hidden
    page.uncheck("#rec-layer")
    assert int(page.get_attribute("#map", "data-recordings")) == 0
    page.check("#rec-layer")
    assert int(page.get_attribute("#map", "data-recordings")) == len(listing)


def test_an_images_nearest_recordings_and_a_texts_are_clickable(page, served_multimodal, tmp_path):
    url = served_multimodal
    points = get(url, "/api/points")["points"]
    index = alone(page, points)[0]
    at = position(page, index)
    page.mouse.click(at["x"], at["y"])
    item = get(url, f"/api/items/{index}")
    chips = page.locator("#sel-recordings button")
    sync_api.expect(chips).to_have_count(5)
    assert [c.get_attribute("data-id") for c in chips.all()] == [str(r["id"]) for r in item["nearest_recordings"]]
    assert [c.text_content() for c in chips.all()] == [str(r["digit"]) for r in item["nearest_recordings"]]
    chips.nth(1).click()
    recording_shown(page, url, item["nearest_recordings"][1]["id"])
    sync_api.expect(page.locator("#sel-image")).to_have_attribute("src", item["image"])  # the test image stays

    # text -> recordings: the recordings nearest the text's code, clickable the same way
    page.locator("#text-input").press_sequentially("seven")
    page.wait_for_selector("body[data-text='seven']")
    seven = post(url, "/api/text", {"text": "seven", "n": 8, "seed": 0})
    text_chips = page.locator("#text-recordings button")
    sync_api.expect(text_chips).to_have_count(5)
    assert [c.get_attribute("data-id") for c in text_chips.all()] == [str(r["id"]) for r in seven["nearest_recordings"]]
    text_chips.nth(0).click()
    recording_shown(page, url, seven["nearest_recordings"][0]["id"])
    screenshot(page, tmp_path, "issue22-sound-text-to-recording")


def test_a_recording_is_picked_on_the_map(page, served_multimodal, tmp_path):
    url = served_multimodal
    listing = get(url, "/api/recordings")["recordings"]
    ids = [p["index"] for p in get(url, "/api/points")["points"]]

    def gaps():  # per recording, the screen distance to the nearest other point (image or recording)
        items = page.evaluate("(ids) => ids.map((i) => window.aelab.pagePosition(i))", ids)
        recs = page.evaluate("(n) => [...Array(n).keys()].map((r) => window.aelab.recordingPosition(r))", len(listing))
        items, recs = np.array([[a["x"], a["y"]] for a in items]), np.array([[a["x"], a["y"]] for a in recs])
        to_item = np.hypot(*(recs[:, None] - items[None]).transpose(2, 0, 1)).min(1)
        to_rec = np.sort(np.hypot(*(recs[:, None] - recs[None]).transpose(2, 0, 1)), 1)[:, 1]
        return np.minimum(to_item, to_rec), recs

    gap, recs = gaps()
    r = int(gap.argmax())  # the recording drawn furthest from any other point: zoomed in on until it stands alone
    for _ in range(40):
        if gap[r] > 10:
            break
        page.mouse.move(*recs[r])
        page.mouse.wheel(0, -200)
        gap, recs = gaps()
    assert gap[r] > 10, "no recording stands apart from the other points, even zoomed in"
    page.mouse.move(*recs[r])
    sync_api.expect(page.locator("#tooltip-label")).to_have_text(
        f"recording #{listing[r]['recording']} · spoken {listing[r]['digit']}")
    page.mouse.click(*recs[r])
    recording_shown(page, url, r)
    screenshot(page, tmp_path, "issue22-sound-map-pick")
