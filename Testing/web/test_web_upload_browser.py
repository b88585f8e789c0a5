"""Uploads in headless Chromium, as a user makes them: the page's file input -> ``static/upload.js`` -> the
gateway's upload route (streamed to the tab's folder) -> the tab opens it. A CT opens; a file past the upload
budget and a file that is not a CT are refused in the page's banner, and the page goes on working.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from CTSAM3DLib import bundled
from test_web_e2e import PAGE_TIMEOUT_S, _text, _wait


def _choose(driver: Any, path: Path) -> None:
    """Pick a file in the page's upload input (cleared first, so that each choice is one file)."""
    from selenium.webdriver.common.by import By

    chooser = driver.find_element(By.CSS_SELECTOR, "input[type=file]")
    chooser.clear()
    chooser.send_keys(str(path))


def test_upload_opens_a_ct_and_refusals_show_in_the_banner(serve_url: str, browser: Any, tmp_path: Path) -> None:
    browser.set_page_load_timeout(PAGE_TIMEOUT_S)
    browser.get(serve_url)
    _wait(lambda: "ready" in _text(browser, "status"), PAGE_TIMEOUT_S, "the session to be ready")

    upload = tmp_path / "uploaded case.nii.gz"
    shutil.copy(bundled.sample_dir() / "ct.nii.gz", upload)
    _choose(browser, upload)
    _wait(lambda: _text(browser, "ct-name") == "uploaded case" and "ready" in _text(browser, "status"), 120,
          f"the upload to open (banner: {_text(browser, 'error-banner')!r})")
    assert not _text(browser, "error-banner")

    huge = tmp_path / "huge.nii.gz"  # sparse: larger than the default 2 GiB budget, nothing on disk
    with open(huge, "wb") as sink:
        sink.truncate(3 << 30)
    _choose(browser, huge)
    _wait(lambda: "--max-upload-gb" in _text(browser, "error-banner"), 60, "the budget refusal")

    notes = tmp_path / "notes.txt"
    notes.write_text("not a CT")
    _choose(browser, notes)
    _wait(lambda: "not a CT file" in _text(browser, "error-banner"), 60, "the refusal of a text file")
    assert _text(browser, "ct-name") == "uploaded case"
