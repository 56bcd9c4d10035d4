"""In a real browser (headless Chromium): the App loads a scored dataset on a review queue and the
queue's first sample is the expected one. Skipped when chromium, chromedriver or selenium is absent."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from tests.chrome import headless_chrome

from cvcurate import corrupt, store
from cvcurate.stages.score import run_score
from tests import makedata as md

pytestmark = [pytest.mark.browser, pytest.mark.slow]



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser():
    return headless_chrome()


def open_first_sample(driver, url: str, timeout: float = 90, ready: str = r"img_\d+\.jpg") -> str:
    """Load the App, dismiss pop-ups, open the first tile of the grid; return the page text."""
    driver.get(url)
    t0 = time.time()
    lookers = []
    while time.time() - t0 < timeout:
        lookers = driver.find_elements("css selector", '[data-cy="looker"]')
        if lookers:
            break
        time.sleep(0.5)
    assert lookers, "the App showed no sample tiles"
    time.sleep(1)
    for b in driver.find_elements("xpath", "//*[normalize-space(text())='Dismiss']"):
        try:
            b.click()
        except Exception:  # noqa: BLE001 - the pop-up may already be gone
            pass
    lookers = driver.find_elements("css selector", '[data-cy="looker"]')
    lookers[0].click()
    t0 = time.time()
    text = ""
    while time.time() - t0 < 30:
        text = driver.find_element("tag name", "body").text
        # the sample view is open when its file name shows: the grid's sidebar lists a "filepath"
        # field too, so waiting for that word returned before the sample opened (1 run in 5)
        if re.search(ready, text):
            break
        time.sleep(0.5)
    return text


def test_app_shows_queue_in_score_order(tmp_path, dataset_name):
    labels = md.make_labels(tmp_path / "images", n=12, width=160, height=120)
    res = corrupt.corrupt(labels, rate=0.3, seed=0, types=["degenerate"])
    store.write(res.labels, dataset_name)
    run_score(dataset_name, pixels=False, out_dir=tmp_path / "scores")
    queue = store.load(dataset_name).load_saved_view("cvc-geometry")
    first = queue.first()
    expected = Path(first.filepath).name
    reason = first["cvc_reason"]
    driver = browser()
    port = free_port()
    session = store.launch_app(dataset_name, "cvc-geometry", port=port, address="127.0.0.1", remote=True)
    try:
        text = open_first_sample(driver, f"http://127.0.0.1:{port}/")
        driver.save_screenshot(str(tmp_path / "review.png"))
    finally:
        driver.quit()
        session.close()
    names = re.findall(r"img_\d+\.jpg", text)
    assert names and names[0] == expected, (names, expected)
    assert "cvc_fixes" in text and "ground_truth" in text
    # the suspect box is a layer of its own, and the top issue's reason comes first in the sidebar
    assert "cvc_suspects" in text
    assert reason and reason[:20] in text and text.index("cvc_reason") < text.index("cvc_issues")
    assert (tmp_path / "review.png").stat().st_size > 10_000
