"""The default click on the sample's liver (bundled weights): how it is run never changes what it segments.

Batching, progress reporting and the patch cache are speed and feedback devices; the masks and the
patch probabilities must be those of one patch per network call, to float rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

from CTSAM3DLib import Session, SessionConfig, load_model
from CTSAM3DLib.benchmarks.organ import CppCase, default_cpp_case, load_cpp_case
from CTSAM3DLib.engine.progress import ClickProgress
from CTSAM3DLib.prompts.simulate import next_click

# A CPP ring of 11 neighbours: batches of 6 + 5 at the default batch size, 11 calls at batch size 1.
MAX_PATCHES = 12


@pytest.fixture(scope="module")
def liver() -> CppCase:
    return load_cpp_case(default_cpp_case())


def _click_twice(case: CppCase, batch_size: int, progress: list[ClickProgress] | None = None) -> Session:
    """The default click at the liver's deepest voxel, then the simulator's correction after it."""
    session = Session(load_model(), SessionConfig(max_patches=MAX_PATCHES, batch_size=batch_size))
    session.set_volume(case.image)
    report = progress.append if progress is not None else None
    session.add_click(case.point_ijk, True, progress=report)
    click = next_click(session.mask(), case.mask > 0, case.image.GetSpacing())
    assert click is not None
    session.add_click(click.point_xyz, click.is_positive, progress=report)
    return session


def test_batched_click_equals_one_patch_per_call(liver: CppCase) -> None:
    seen: list[ClickProgress] = []
    batched, single = _click_twice(liver, 8, seen), _click_twice(liver, 1)
    assert batched.last_stats["patches"] > 1 and any(p.stage == "cpp" for p in seen)
    assert np.array_equal(batched.mask(), single.mask()) and batched.mask().any()
    a, b = (s._vol.targets["default"].snapshot.patches for s in (batched, single))
    assert a.keys() == b.keys()
    for start in a:
        np.testing.assert_allclose(a[start].prob.astype(np.float32), b[start].prob.astype(np.float32), atol=2e-3)
        assert np.array_equal(a[start].points, b[start].points) and np.array_equal(a[start].labels, b[start].labels)
