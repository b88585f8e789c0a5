"""scripts/slicer/make_reference_masks.py, then the Slicer self-test's reference comparison, on slicer-core (slow: a real model).

The script writes a .seg.nrrd and clicks.json; ``CTSAM3DTest.test_reference_masks`` (the module's own
code, run with stand-ins for Slicer's Qt parts) replays them on a fresh scene and asks Dice >= 0.99.
A random-weight checkpoint stands in for the bundled weights, so this checks plumbing and
determinism, not accuracy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "Resources" / "sample" / "abdomen_pelvis"


@pytest.mark.slow
def test_reference_masks_are_reproduced_by_the_self_test(scene, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts" / "slicer"))
    import make_reference_masks
    import torch
    from mrml_test_support import import_module_with_stand_ins

    from CTSAM3DLib import build_model, bundled
    from CTSAM3DLib.model.checkpoint import save_checkpoint, sha256_of

    if not (SAMPLE / "ct.nii.gz").is_file():
        pytest.skip("the sample CT is not bundled")
    torch.manual_seed(0)
    weights = tmp_path / "weights.pt"
    save_checkpoint(weights, build_model("compact"), "compact", (-1000.0, 1000.0), {"note": "random, test only"})
    reference = tmp_path / "resources" / "sample" / "reference"
    assert make_reference_masks.main(["--checkpoint", str(weights), "--output", str(reference), "--no-cpp",
                                      "--structures", "kidney_right", "aorta"]) == 0
    spec = json.loads((reference / "clicks.json").read_text())
    assert [s["name"] for s in spec["structures"]] == ["kidney_right", "aorta"] and spec["use_cpp"] is False
    shutil.copy(weights, tmp_path / "bundled.pt")
    monkeypatch.setattr(bundled, "resources_dir", lambda: tmp_path / "resources")
    monkeypatch.setattr(bundled, "sample_dir", lambda: SAMPLE)
    monkeypatch.setattr(bundled, "default_weights_path", lambda: tmp_path / "bundled.pt")
    monkeypatch.setattr(bundled, "DEFAULT_WEIGHTS_SHA256", sha256_of(tmp_path / "bundled.pt"))
    module = import_module_with_stand_ins(monkeypatch)
    test = module.CTSAM3DTest()
    test.setUp()
    test.test_reference_masks()
