"""End to end in headless Chromium: ``ctsam3d serve`` -> page -> a click in the liver -> segment -> undo.

The test uses the page as a user does: it moves the mouse over the axial view and reads the cursor read-out
(R, A, S under the mouse, as Slicer's data probe) to find where the liver point of the reference clicks is,
steps the axial slice slider with the keyboard, clicks once with the include tool, waits for the status line,
and downloads the result with the page's ``nii.gz`` button. The screenshot is kept in ``test-artifacts/web/``.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from CTSAM3DLib import bundled

# Where the screenshots are kept (override with CTSAM3D_TEST_ARTIFACTS).
ARTIFACTS = Path(os.environ.get("CTSAM3D_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
# Colour the test gives the segment through the page's colour picker.
SEGMENT_RGB = (0, 0, 255)
# Seconds the first page may take (the gateway starts the tab's worker) and one click on CPU may take.
PAGE_TIMEOUT_S, CLICK_TIMEOUT_S = 240.0, 120.0


def _liver_point_ras() -> tuple[float, float, float]:
    clicks = json.loads((bundled.resources_dir() / "sample" / "reference" / "clicks.json").read_text())
    liver = next(s for s in clicks["structures"] if s["name"] == "liver")
    return tuple(liver["points_ras"][0])  # type: ignore[return-value]


def _wait(condition: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _text(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.ID, element_id)  # none until the page has connected
    return found[0].text if found else ""


def _probe(driver: Any, view: Any, x: float, y: float) -> tuple[float, float, float]:
    """Move the mouse to pixel (x, y) of the view; the cursor read-out's R, A, S (mm)."""
    from selenium.webdriver.common.action_chains import ActionChains

    before = _text(driver, "probe")
    ActionChains(driver).move_to_element_with_offset(view, x - view.rect["width"] / 2,
                                                     y - view.rect["height"] / 2).perform()
    pattern = re.compile(r"R (\S+)\s+A (\S+)\s+S (\S+) mm")
    text = _wait(lambda: (t := _text(driver, "probe")) != before and pattern.search(t) and t, 20, "the read-out")
    return tuple(float(v) for v in pattern.search(text).groups())  # type: ignore[return-value, union-attr]


def _screenshot(driver: Any) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")).astype(int)


def _segment_colour_pixels(image: np.ndarray, x: int, y: int, radius: int = 20) -> int:
    """Pixels around (x, y) whose colour leans to the segment's blue (a grey CT pixel never does)."""
    box = image[y - radius:y + radius + 1, x - radius:x + radius + 1]
    return int(((box[..., 2] - np.maximum(box[..., 0], box[..., 1])) > 40).sum())


def _download_mask(driver: Any, previous: set[Path]) -> np.ndarray:
    """Press the page's nii.gz button; the label map it downloads (z, y, x)."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "download-nii-gz").click()
    path = _wait(lambda: next((p for p in driver.downloads.iterdir() if p not in previous and not p.suffix), None),
                 60, f"the .nii.gz download (banner: {_text(driver, 'error-banner')!r})")
    _wait(lambda: not list(driver.downloads.glob("*.crdownload")), 30, "the download to finish")
    previous.add(path)
    named = path.with_name(path.name + ".nii.gz")  # downloads are saved under GUID names
    named.write_bytes(path.read_bytes())
    return sitk.GetArrayFromImage(sitk.ReadImage(str(named)))


def test_click_in_liver_segments_and_undo_empties(serve_url: str, browser: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.set_page_load_timeout(PAGE_TIMEOUT_S)
    browser.get(serve_url)
    assert "/s/" in browser.current_url  # the gateway gave this tab its own session
    _wait(lambda: "ready" in _text(browser, "status"), PAGE_TIMEOUT_S, "the session to be ready")
    axial = browser.find_elements(By.CSS_SELECTOR, "img.image-display-area")[0]
    r, a, s = _liver_point_ras()

    thumb = browser.find_elements(By.CSS_SELECTOR, ".v-slider-thumb")[0]  # the axial view's slice slider
    browser.execute_script("arguments[0].focus()", thumb)
    for _ in range(200):
        offset = float(thumb.get_attribute("aria-valuenow"))
        if abs(offset - s) < 1.6:
            break
        thumb.send_keys(Keys.ARROW_RIGHT if offset < s else Keys.ARROW_LEFT)
    assert abs(float(thumb.get_attribute("aria-valuenow")) - s) < 1.6

    (r1, a1, s1), (r2, a2, _) = _probe(browser, axial, 100, 100), _probe(browser, axial, 300, 250)
    assert abs(s1 - s) < 1.6 and r1 != r2 and a1 != a2
    x, y = 100 + (r - r1) * 200 / (r2 - r1), 100 + (a - a1) * 150 / (a2 - a1)  # linear in an axial view
    assert np.allclose(_probe(browser, axial, x, y)[:2], (r, a), atol=2.0)

    swatch = browser.find_element(By.CSS_SELECTOR, "#segment-list input[type=color]")
    browser.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change'))",
                           swatch, "#{:02x}{:02x}{:02x}".format(*SEGMENT_RGB))
    time.sleep(1.0)
    screen_x, screen_y = int(axial.rect["x"] + x), int(axial.rect["y"] + y)
    assert _segment_colour_pixels(_screenshot(browser), screen_x, screen_y) == 0

    ActionChains(browser).move_to_element_with_offset(axial, x - axial.rect["width"] / 2,
                                                      y - axial.rect["height"] / 2).click().perform()
    status = _wait(lambda: re.search(r"ms \| .*\| 1 clicks", t := _text(browser, "status")) and t, CLICK_TIMEOUT_S,
                   "the click's result")
    assert not _text(browser, "error-banner"), status
    voxel = tuple(int(v) for v in re.search(r"voxel \((\d+), (\d+), (\d+)\)", _text(browser, "probe")).groups())

    time.sleep(1.5)  # the next rendered frame
    after = _screenshot(browser)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.fromarray(after.astype(np.uint8)).save(ARTIFACTS / "web_e2e_liver_click.png")
    assert _segment_colour_pixels(after, screen_x, screen_y) > 200, "the segment's colour is not at the click"

    downloaded: set[Path] = set()
    mask = _download_mask(browser, downloaded)
    i, j, k = voxel
    assert mask.sum() > 0 and mask[k, j, i] == 1, f"voxel {voxel} is not in the segment ({int(mask.sum())} voxels)"

    browser.find_element(By.ID, "undo").click()
    _wait(lambda: "| 0 clicks" in _text(browser, "status"), CLICK_TIMEOUT_S, "the undo")
    assert _download_mask(browser, downloaded).sum() == 0
    time.sleep(1.5)
    assert _segment_colour_pixels(_screenshot(browser), screen_x, screen_y) == 0
