"""The catalogue screenshot is drawn by Slicer's own slice views (off-screen), not re-drawn by matplotlib."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_slice_views_render_the_segments_and_the_points(tmp_path):
    pytest.importorskip("trame_slicer", reason="needs the web extra (trame-slicer)")
    from PIL import Image

    output = tmp_path / "shot.png"
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "slicer" / "make_screenshot.py"), "--stub",
                          "--size", "160", "--output", str(output)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    pixels = np.asarray(Image.open(output).convert("RGB")).astype(int)
    assert pixels.shape[1] == 3 * 160
    green = (pixels[..., 1] > 150) & (pixels[..., 0] < 120) & (pixels[..., 2] < 120)  # the include points
    assert green.any()
    assert "matplotlib" not in (REPO / "scripts" / "slicer" / "make_screenshot.py").read_text()
