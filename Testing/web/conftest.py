"""Fixtures for the web app: the ``web`` extra, a running ``ctsam3d serve``, headless Chromium.

Without trame-slicer, Chromium or chromedriver these tests skip, except under ``CI=true``, where they fail
(CI installs them: see .ci/run).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

# Browser and driver from Debian's chromium / chromium-driver packages.
CHROMIUM, CHROMEDRIVER = "chromium", "chromedriver"


def require(condition: bool, what: str) -> None:
    """Skip without ``what``; fail instead under ``CI=true``."""
    if condition:
        return
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{what} is missing under CI=true (.ci/run installs it)", pytrace=False)
    pytest.skip(f"{what} is missing")


@pytest.fixture(scope="session")
def web_extra() -> None:
    """trame-slicer and slicer-core importable (the ``web`` extra)."""
    try:
        import trame_slicer  # noqa: F401
    except ImportError:
        require(False, "the web extra (trame-slicer)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_serve(port: int, args: Sequence[str], log_path: Path, timeout_s: float,
                  env: Mapping[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """``ctsam3d serve --port PORT ARGS``, its output in ``log_path``: the process once the port takes connections.

    Fails with the log when the server ends or does not listen within ``timeout_s``; terminated (killed after
    30 s) on exit.
    """
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "CTSAM3DLib.cli.main", "serve", "--port", str(port), *args],
                                   stdout=log, stderr=subprocess.STDOUT, env=None if env is None else dict(env))
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            else:
                raise AssertionError(log_path.read_text(errors="replace"))
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def serve_url(web_extra: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``ctsam3d serve`` (bundled sample CT, CPU) on a free loopback port; its log is printed on failure."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "ctsam3d-serve.log"
    with running_serve(port, ["--device", "cpu", "--idle-minutes", "10"], log, timeout_s=30):
        yield f"http://127.0.0.1:{port}/"


@pytest.fixture()
def browser(web_extra: None, tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium through selenium and the system chromedriver; downloads go to ``tmp_path/downloads`` (GUID names)."""
    require(shutil.which(CHROMIUM) is not None and shutil.which(CHROMEDRIVER) is not None,
            "Chromium / chromedriver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1400,900", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which(CHROMEDRIVER)), options=options)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    # "allowAndName": every download gets a fresh GUID name (with "allow", a second one of the same name is lost)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allowAndName", "downloadPath": str(downloads)})
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()

