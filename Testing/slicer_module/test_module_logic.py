"""The module file's Logic and self-test code, run on slicer-core with stand-ins for Slicer's Qt parts.

``CTSAM3DLogic`` must expose the bridge's scripting API, and ``CTSAM3DTest``'s synthetic test (a
markups point on an oblique, parent-transformed volume) must pass here as it should in Slicer.
"""

from __future__ import annotations

import numpy as np
from mrml_test_support import import_module_with_stand_ins, make_segmentation_node, world_of_voxel


def test_logic_delegates_the_scripting_api(scene, volume_node, stub_predictor, monkeypatch):
    module = import_module_with_stand_ins(monkeypatch)
    logic = module.CTSAM3DLogic()
    assert logic._core is None  # CTSAM3DLib (and torch) are imported on first use only
    logic.set_predictor(stub_predictor)
    logic.configure(use_cpp=False, overwrite="none")
    segmentation = make_segmentation_node(scene)
    segment_id = logic.segment(volume_node, segmentation, None, [world_of_voxel(volume_node, (20, 24, 20))], [1])
    session = logic.session(volume_node, segmentation)
    assert session.engine.clicks(segment_id)[0].is_positive and logic.core.config.use_cpp is False
    np.testing.assert_allclose(session.engine.clicks(segment_id)[0].point_xyz, (20, 24, 20), atol=1e-6)
    logic.close()


def test_self_test_synthetic_part(scene, monkeypatch):
    module = import_module_with_stand_ins(monkeypatch)
    module.CTSAM3DTest().test_markups_click_lands_on_voxel()
