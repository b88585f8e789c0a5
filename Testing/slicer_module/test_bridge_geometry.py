"""A click in Slicer's world RAS lands at the right voxel, and the result is written voxel-exact.

Geometries: axis-aligned, oblique (rotated, anisotropic), flipped (left-handed), a volume
under a (nested) parent transform, and a segmentation under a transform of its own.
"""

from __future__ import annotations

import numpy as np
import pytest
from mrml_test_support import (
    affine,
    make_segmentation_node,
    make_transform_node,
    make_volume_node,
    rotation,
    segment_array,
    segment_internal_array,
    synthetic_ct,
    world_of_voxel,
)

SHAPE_ZYX = (36, 44, 52)
TARGET_IJK = (30, 17, 21)  # voxel (i, j, k) clicked

GEOMETRIES = {
    "axis_aligned": affine(np.diag([1.0, 1.0, 2.0]), (-25.0, -20.0, -30.0)),
    "oblique": affine(rotation((0.2, 1.0, 0.5), 33.0) @ np.diag([0.8, 1.1, 2.2]), (12.0, -7.0, 55.0)),
    "flipped": affine(np.diag([-0.9, 1.2, 2.5]), (40.0, -30.0, 10.0)),
    "flipped_oblique": affine(rotation((1.0, 0.0, 1.0), -20.0) @ np.diag([1.0, -1.0, -1.5]), (0.0, 5.0, 80.0)),
}
# Volume parent transforms (to-parent matrices; the second is nested under the first).
TRANSFORM_A = affine(rotation((0.0, 0.0, 1.0), 40.0), (30.0, -12.0, 5.0))
TRANSFORM_B = affine(rotation((1.0, 0.0, 0.0), -15.0), (-4.0, 9.0, 2.0))


def _click_and_check(scene, volume_node, segmentation_node, predictor):
    from CTSAM3DLib.mrml.session import SegmentationSession

    session = SegmentationSession(volume_node, segmentation_node, predictor)
    point_world = world_of_voxel(volume_node, TARGET_IJK)
    outcome = session.click(point_world, True)
    segment_id = outcome.job.segment_id
    clicked = np.asarray(session.engine.clicks(segment_id)[0].point_xyz)
    np.testing.assert_allclose(clicked, TARGET_IJK, atol=1e-6)  # the engine got exactly that voxel
    written = segment_internal_array(segmentation_node, segment_id, volume_node)
    np.testing.assert_array_equal(written, session.engine.mask(segment_id))  # voxel-exact, as stored
    if volume_node.GetParentTransformNode() is None and segmentation_node.GetParentTransformNode() is None:
        np.testing.assert_array_equal(segment_array(segmentation_node, segment_id, volume_node), written)
    i, j, k = TARGET_IJK
    assert written[k, j, i] == 1
    centroid_ijk = np.argwhere(written).mean(axis=0)[::-1]
    assert np.abs(centroid_ijk - TARGET_IJK).max() < 1.0  # the ball sits on the clicked voxel
    return session, outcome


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_click_lands_on_voxel(scene, stub_predictor, name):
    volume = make_volume_node(scene, synthetic_ct(SHAPE_ZYX), GEOMETRIES[name])
    _click_and_check(scene, volume, make_segmentation_node(scene), stub_predictor)


@pytest.mark.parametrize("name", ["oblique", "flipped"])
def test_click_lands_on_voxel_of_parent_transformed_volume(scene, stub_predictor, name):
    volume = make_volume_node(scene, synthetic_ct(SHAPE_ZYX), GEOMETRIES[name])
    outer = make_transform_node(scene, TRANSFORM_A)
    volume.SetAndObserveTransformNodeID(make_transform_node(scene, TRANSFORM_B, parent=outer).GetID())
    world = world_of_voxel(volume, TARGET_IJK)
    local = GEOMETRIES[name] @ np.array([*TARGET_IJK, 1.0])
    assert np.linalg.norm(world - local[:3]) > 5.0  # the transform really moves the point
    _click_and_check(scene, volume, make_segmentation_node(scene), stub_predictor)


def test_segmentation_under_its_own_transform(scene, stub_predictor):
    volume = make_volume_node(scene, synthetic_ct(SHAPE_ZYX), GEOMETRIES["oblique"])
    volume.SetAndObserveTransformNodeID(make_transform_node(scene, TRANSFORM_A).GetID())
    segmentation = make_segmentation_node(scene)
    segmentation.SetAndObserveTransformNodeID(make_transform_node(scene, TRANSFORM_B).GetID())
    _click_and_check(scene, volume, segmentation, stub_predictor)


def test_markups_under_a_transform_use_world_coordinates(scene, stub_predictor):
    """A point placed in a transformed markups node counts where it is shown (its world position)."""
    from CTSAM3DLib.mrml.markups import PromptMarkups
    from CTSAM3DLib.mrml.session import SegmentationSession

    volume = make_volume_node(scene, synthetic_ct(SHAPE_ZYX), GEOMETRIES["flipped_oblique"])
    session = SegmentationSession(volume, make_segmentation_node(scene), stub_predictor)
    segment_id = session.add_segment()
    prompts = PromptMarkups(scene, lambda p, pos: session.click(p, pos, segment_id))
    prompts.positive_node.SetAndObserveTransformNodeID(make_transform_node(scene, TRANSFORM_A).GetID())
    prompts.positive_node.AddControlPointWorld(world_of_voxel(volume, TARGET_IJK).tolist())
    np.testing.assert_allclose(session.engine.clicks(segment_id)[0].point_xyz, TARGET_IJK, atol=1e-6)


def test_real_model_click_is_written_voxel_exact(scene, volume_node, segmentation_node):
    """The random-weight compact model through the full engine: the segment equals the engine mask."""
    import torch

    from CTSAM3DLib import Predictor, SessionConfig, build_model
    from CTSAM3DLib.mrml.session import SegmentationSession

    torch.manual_seed(0)
    predictor = Predictor(build_model("compact"), "compact", (-1000.0, 1000.0))
    session = SegmentationSession(volume_node, segmentation_node, predictor, SessionConfig(use_cpp=False))
    outcome = session.click(world_of_voxel(volume_node, (20, 25, 18)), True)
    assert outcome.box is not None and outcome.patches >= 1
    written = segment_array(segmentation_node, outcome.job.segment_id, volume_node)
    np.testing.assert_array_equal(written, session.engine.mask(outcome.job.segment_id))


def test_click_outside_the_volume_is_refused(scene, stub_predictor, volume_node, segmentation_node):
    from CTSAM3DLib.mrml.session import SegmentationSession

    session = SegmentationSession(volume_node, segmentation_node, stub_predictor)
    with pytest.raises(ValueError, match="outside the image"):
        session.click(world_of_voxel(volume_node, (-20, 5, 5)), True)
