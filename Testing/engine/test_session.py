"""Engine: undo/redo, bbox-local updates, caching, CPP expansion policy, seamless blending."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from CTSAM3DLib import Predictor, Session, SessionConfig
from CTSAM3DLib.engine import planning
from CTSAM3DLib.engine.progress import ClickCancelled, ClickProgress
from CTSAM3DLib.geometry.model_space import PATCH_SIZE
from CTSAM3DLib.prompts.simulate import interior_depth
from CTSAM3DLib.prompts.heatmap import click_maps


class ThresholdOracle:
    """Test double with the Predictor interface: 'segments' bright voxels, CPP points at their centroid."""

    device = torch.device("cpu")
    window_hu = (-1000.0, 1000.0)
    needs_image = False

    def __init__(self) -> None:
        self.cpp_calls = 0

    def scale(self, hu: np.ndarray) -> torch.Tensor:
        return (torch.as_tensor(hu, dtype=torch.float32).clamp(-1000, 1000) + 1000) / 2000

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [image]

    def decode(self, feats, points, labels, prev_mask=None, image=None, refine_passes=0) -> torch.Tensor:  # noqa: ANN001
        return (feats[0] > 0.525).float()

    def cpp(self, image_u, mask_u, image_v) -> torch.Tensor:  # noqa: ANN001
        self.cpp_calls += len(image_v)
        fg = image_v[:, 0] > 0.525
        out = torch.zeros_like(image_v)
        for b in range(len(fg)):
            idx = fg[b].nonzero().float()
            if len(idx):
                z, y, x = idx.mean(0)
                out[b:b + 1] = click_maps(torch.tensor([[[x, y, z]]]), torch.tensor([[1]]), 64)[:, :1]
        return out


def _big_sphere(radius_mm: float, shape: tuple[int, int, int] = (60, 110, 110)) -> tuple[sitk.Image, np.ndarray]:
    spacing = (2.0, 2.0, 3.0)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    mask = ((xx - 55) * 2.0) ** 2 + ((yy - 55) * 2.0) ** 2 + ((zz - 30) * 3.0) ** 2 < radius_mm ** 2
    img = sitk.GetImageFromArray(np.where(mask, 150, -50).astype(np.int16))
    img.SetSpacing(spacing)
    return img, mask


def _clicked_sphere(radius_mm: float, oracle: ThresholdOracle, shape: tuple[int, int, int] = (60, 110, 110),
                    **config: object) -> tuple[Session, np.ndarray]:
    """A session on `_big_sphere` clicked once at the sphere's centre; returns it and the sphere's mask."""
    img, gt = _big_sphere(radius_mm, shape)
    s = Session(oracle, SessionConfig(**config))  # type: ignore[arg-type]
    s.set_volume(img)
    s.add_click((55, 55, 30))
    return s, gt


def test_requires_volume_and_validates_points(random_predictor: Predictor, sphere_image) -> None:  # noqa: ANN001
    s = Session(random_predictor)
    with pytest.raises(RuntimeError, match="set_volume"):
        s.add_click((1, 1, 1))
    s.set_volume(sphere_image[0])
    with pytest.raises(ValueError, match="outside the image"):
        s.add_click((500, 10, 10))
    with pytest.raises(ValueError, match="No positive point"):
        s.add_click((45, 40, 20), is_positive=False)
    with pytest.raises(ValueError, match="frame"):
        s.add_click((45, 40, 20), frame="xyz")  # type: ignore[arg-type]


def test_undo_redo_exact_and_bbox_local(random_predictor: Predictor, sphere_image) -> None:  # noqa: ANN001
    s = Session(random_predictor, SessionConfig(use_cpp=False))
    s.set_volume(sphere_image[0])
    s.add_click((45, 40, 20))
    first = s.mask().copy()
    box = s.add_click((50, 44, 22), is_positive=False)
    second = s.mask().copy()
    (i0, j0, k0), (i1, j1, k1) = box
    outside = np.ones_like(first, dtype=bool)
    outside[k0:k1, j0:j1, i0:i1] = False
    assert np.array_equal(first[outside], second[outside])
    assert s.undo() and np.array_equal(s.mask(), first)
    assert s.redo() and np.array_equal(s.mask(), second)
    assert s.undo() and s.undo() and not s.mask().any()
    assert not s.undo()
    assert s.redo() and np.array_equal(s.mask(), first)


def test_reclick_uses_cache_and_matches_fresh_session(random_predictor: Predictor, sphere_image) -> None:  # noqa: ANN001
    cfg = SessionConfig(use_cpp=False)
    a = Session(random_predictor, cfg)
    a.set_volume(sphere_image[0])
    a.add_click((45, 40, 20), target="one")
    runs = a._vol.runner.encoder_runs
    a.add_click((45, 40, 20), target="two")  # another target, same patch: cache hit
    assert a._vol.runner.encoder_runs == runs
    b = Session(random_predictor, cfg)
    b.set_volume(sphere_image[0])
    b.add_click((45, 40, 20))
    assert np.array_equal(a.mask("two"), b.mask())
    assert a.targets == ("one", "two")


def test_reset_is_undoable(random_predictor: Predictor, sphere_image) -> None:  # noqa: ANN001
    s = Session(random_predictor, SessionConfig(use_cpp=False))
    s.set_volume(sphere_image[0])
    s.add_click((45, 40, 20))
    before = s.mask().copy()
    s.reset()
    assert not s.mask().any() and s.clicks() == ()
    assert s.undo() and np.array_equal(s.mask(), before) and len(s.clicks()) == 1


def test_a_new_patch_moves_inside_the_scan_and_keeps_its_click_in_its_core() -> None:
    grid = (200, 150, 40)  # x, y longer than a patch, z shorter
    m, last = planning.NEW_PATCH_MARGIN, PATCH_SIZE - 1 - planning.NEW_PATCH_MARGIN
    assert planning.new_patch_start(np.array([100.0, 75.0, 20.0]), grid) == (68, 43, -12)  # centred; z as the scan
    assert planning.new_patch_start(np.array([0.0, 149.0, 0.0]), grid) == (-m, 149 - last, -m)  # edges: moved in
    assert planning.new_patch_start(np.array([20.0, 130.0, 39.0]), grid) == (0, 150 - PATCH_SIZE, 39 - last)
    rng = np.random.default_rng(0)
    for point in rng.uniform(0, np.asarray(grid) - 1, size=(200, 3)):
        start = np.asarray(planning.new_patch_start(point, grid))
        offset = np.round(point) - start
        assert np.all((offset >= m) & (offset <= last))  # where training puts a click
        centred = np.round(point) - PATCH_SIZE // 2
        padding = np.maximum(-start, 0) + np.maximum(start + PATCH_SIZE - np.asarray(grid), 0)
        assert np.all(padding <= np.maximum(-centred, 0) + np.maximum(centred + PATCH_SIZE - np.asarray(grid), 0))


def test_a_click_on_the_last_slice_gets_a_patch_inside_the_scan() -> None:
    img, _ = _big_sphere(20.0)
    s = Session(ThresholdOracle(), SessionConfig(use_cpp=False))
    s.set_volume(img)
    s.add_click((55, 55, 59))  # the top slice (z = 59 of 60)
    (start,) = s._vol.targets["default"].snapshot.patches
    top = s._vol.grid.shape_xyz[2] - 1
    assert top - start[2] == PATCH_SIZE - 1 - planning.NEW_PATCH_MARGIN  # moved down, the click 16 voxels from the top


def test_cpp_stays_home_for_a_small_structure() -> None:
    oracle = ThresholdOracle()
    s, _ = _clicked_sphere(20.0, oracle, max_patches=27)
    assert s.last_stats["cpp_patches"] == 0 and oracle.cpp_calls == 0


def test_cpp_reads_neighbours_without_encoding_them() -> None:
    oracle = ThresholdOracle()
    s, _ = _clicked_sphere(75.0, oracle, max_patches=27, cpp_min_peak=2.0)  # no peak passes
    assert oracle.cpp_calls >= 6 and s.last_stats["cpp_patches"] == 0
    assert s._vol.runner.encoder_runs == 1  # only the clicked patch: rejected neighbours cost no encoder pass


def test_cpp_visits_only_reached_neighbours_and_blends_without_seams() -> None:
    s, gt = _clicked_sphere(75.0, ThresholdOracle(), max_patches=64)
    patches = s._vol.targets["default"].snapshot.patches
    assert s.last_stats["cpp_patches"] >= 6
    for v in patches:
        if v == next(iter(patches)):
            continue
        assert any(planning.reaches(patches[u].prob >= 0.5, d) and planning.neighbour_start(u, d) == v
                   for u in patches for d in planning.NEIGHBOUR_OFFSETS), f"patch {v} not reached from any other"
    mask = s.mask().astype(bool)
    # The oracle is exact inside every patch, so any seam would show as missed voxels at patch borders.
    assert (gt & ~mask).sum() <= 0.002 * gt.sum()
    assert (mask & ~gt).sum() <= 0.002 * gt.sum()


def test_a_negative_click_refines_the_patch_holding_it_and_never_expands() -> None:
    s, _ = _clicked_sphere(75.0, ThresholdOracle(), max_patches=2)
    assert s.last_stats["cpp_patches"] == 1
    patches = dict(s._vol.targets["default"].snapshot.patches)
    s.add_click((55 + 15, 55, 30), is_positive=False)  # 20 model voxels off-centre: outside the core, inside the patch
    assert s.last_stats["new_patch"] == 0.0 and len(s._vol.targets["default"].snapshot.patches) == 2
    s.add_click((5, 5, 55), is_positive=False)  # outside every patch, the sphere's rim in reach
    assert s.last_stats["new_patch"] == 1.0 and s.last_stats["cpp_patches"] == 0
    assert set(patches) < set(s._vol.targets["default"].snapshot.patches)


class StubbornOracle(ThresholdOracle):
    """Segments bright voxels in every patch that holds a positive click, whatever its negative clicks say."""

    def decode(self, feats, points, labels, prev_mask=None, image=None, refine_passes=0) -> torch.Tensor:  # noqa: ANN001
        out = super().decode(feats, points, labels, prev_mask, image)
        return out * (labels == 1).any(1).float().view(-1, 1, 1, 1, 1)


@pytest.mark.parametrize("beyond_u", [False, True])
def test_a_negative_click_reaches_every_patch_showing_it_and_retracts_an_overruled_cpp_click(beyond_u: bool) -> None:
    s, _ = _clicked_sphere(75.0, StubbornOracle(), max_patches=2, cpp_mode="geometric")
    (u, state_u), (v, state_v) = s._vol.targets["default"].snapshot.patches.items()
    assert (state_u.n_auto, state_v.n_auto) == (0, 1)
    d = (np.asarray(v) - np.asarray(u)) // planning.STRIDE  # V's direction from U (a face)
    # 40 voxels out from U's centre only V holds the point; 24 out it lies in the slab both hold.
    point = np.asarray(u) + 32 + (40 if beyond_u else 24) * d
    assert planning.prob_at(state_v.prob, v, point) >= 0.5
    s.add_click(tuple(s._vol.grid.model_to_lps(point)), is_positive=False, frame="lps")
    patches = s._vol.targets["default"].snapshot.patches
    # The oracle keeps V's foreground while V holds its CPP click: the click is retracted and V,
    # left with no positive click, is dropped. U got the correction too wherever it holds the point.
    assert v not in patches
    assert patches[u].labels.tolist() == ([1] if beyond_u else [1, 0])
    ijk = np.rint(s._to_ijk(tuple(s._vol.grid.model_to_lps(point)), "lps")).astype(int)
    assert s.mask()[ijk[2], ijk[1], ijk[0]] == (0 if beyond_u else 1)  # U stays stubborn where it holds the point
    assert s.undo() and v in s._vol.targets["default"].snapshot.patches


class ErasingOracle(ThresholdOracle):
    """Segments bright voxels except within 14 voxels of any negative click of the patch."""

    def decode(self, feats, points, labels, prev_mask=None, image=None, refine_passes=0) -> torch.Tensor:  # noqa: ANN001
        out = super().decode(feats, points, labels, prev_mask, image)
        zz, yy, xx = torch.meshgrid(*(torch.arange(64.0),) * 3, indexing="ij")
        for b in range(len(out)):
            for (x, y, z), label in zip(points[b], labels[b]):
                if label == 0:
                    out[b, 0][(xx - x) ** 2 + (yy - y) ** 2 + (zz - z) ** 2 <= 14 ** 2] = 0
        return out


@pytest.mark.parametrize(("depth", "spread"), [(4.0, True), (math.inf, False), (12.0, False)])
def test_a_negative_click_spreads_into_the_patches_its_removal_continues_into(depth: float, spread: bool) -> None:
    s, _ = _clicked_sphere(75.0, ErasingOracle(), max_patches=2, cpp_mode="geometric", spread_negative_depth=depth,
                           spread_positive_depth=math.inf)
    (u, _), (v, state_v) = s._vol.targets["default"].snapshot.patches.items()
    d = (np.asarray(v) - np.asarray(u)) // planning.STRIDE
    point = np.asarray(u) + 32 + 12 * d  # in U's core, 4 voxels short of the slab V shares: V does not hold it
    assert not planning.holding([v], point)
    s.add_click(tuple(s._vol.grid.model_to_lps(point)), is_positive=False, frame="lps")
    patches = s._vol.targets["default"].snapshot.patches
    assert patches[u].labels.tolist() == [1, 0]
    # U's erased ball reaches 10 voxels into the slab (so at most 10 deep there): V gets a negative click
    # inside it and loses its part, unless the spread needs a deeper removal (12) or is off (inf).
    assert patches[v].labels.tolist() == ([1, 0] if spread else [1])
    assert s.last_stats["spread_patches"] == int(spread)
    if spread:
        spread_point = np.asarray(v) + patches[v].points[-1]
        assert np.linalg.norm(spread_point - point) <= 14 and planning.holding([u], spread_point)
        assert planning.prob_at(patches[v].prob, v, spread_point) == 0.0
    else:
        assert np.array_equal(patches[v].prob, state_v.prob)


def test_spread_clicks_need_a_change_deep_in_the_slab_that_v_still_calls_the_old_way() -> None:
    removed = np.zeros((PATCH_SIZE,) * 3, dtype=bool)
    removed[20:40, 20:40, 40:60] = True  # x 40-59: reaches 12 voxels into the +x slab (x >= 48)
    u, v, w = (0, 0, 0), (planning.STRIDE, 0, 0), (-planning.STRIDE, 0, 0)
    shown = np.ones_like(removed, dtype=np.float32)
    (start, point), = planning.spread_clicks(removed, u, {u: shown, v: shown, w: shown}, set(), 1.0, False)
    assert start == v and 0 <= point[0] < planning.OVERLAP and removed[int(point[2]), int(point[1]), int(point[0]) + 48]
    assert planning.spread_clicks(removed, u, {v: shown}, {v}, 1.0, False) == []  # already corrected
    assert planning.spread_clicks(removed, u, {v: np.zeros_like(shown)}, set(), 1.0, False) == []  # V shows nothing there
    assert planning.spread_clicks(removed, u, {v: shown}, set(), 20.0, False) == []  # not that deep
    assert planning.spread_clicks(np.zeros_like(removed), u, {v: shown}, set(), 1.0, False) == []
    # the same region added by a positive click reaches V where V still shows background, and only there
    assert [s for s, _ in planning.spread_clicks(removed, u, {v: np.zeros_like(shown)}, set(), 1.0, True)] == [v]
    assert planning.spread_clicks(removed, u, {v: shown}, set(), 1.0, True) == []


class BallOracle(ThresholdOracle):
    """Segments bright voxels within 12 voxels of a positive click of the patch."""

    def decode(self, feats, points, labels, prev_mask=None, image=None, refine_passes=0) -> torch.Tensor:  # noqa: ANN001
        out = super().decode(feats, points, labels, prev_mask, image)
        zz, yy, xx = torch.meshgrid(*(torch.arange(64.0),) * 3, indexing="ij")
        near = torch.zeros_like(out, dtype=torch.bool)
        for b in range(len(out)):
            for (x, y, z), label in zip(points[b], labels[b]):
                if label == 1:
                    near[b, 0] |= (xx - x) ** 2 + (yy - y) ** 2 + (zz - z) ** 2 <= 144
        return out * near


@pytest.mark.parametrize(("depth", "spread"), [(2.0, True), (math.inf, False), (12.0, False)])
def test_a_positive_click_spreads_into_a_patch_that_still_misses_its_addition(depth: float, spread: bool) -> None:
    s, _ = _clicked_sphere(75.0, BallOracle(), (60, 110, 140), cpp_mode="geometric", spread_positive_depth=depth)
    (u,) = s._vol.targets["default"].snapshot.patches  # a ball of radius 12 at U's centre: no CPP
    to_lps = s._vol.grid.model_to_lps
    s.add_click(tuple(to_lps(np.asarray(u) + (76, 32, 32))), frame="lps")  # outside U: a new patch V 44 voxels on
    v = next(p for p in s._vol.targets["default"].snapshot.patches if p != u)
    assert v == (u[0] + 44, u[1], u[2]) and s.last_stats["cpp_patches"] == 0
    s.add_click(tuple(to_lps(np.asarray(u) + (39, 32, 32))), frame="lps")  # in U's core, not in V
    patches = s._vol.targets["default"].snapshot.patches
    # U's ball moved 7 voxels towards V: the added crescent reaches V's first 8 voxels, where V shows
    # background, about 4 deep: V gets a positive click there unless the spread needs 12 or is off.
    assert patches[u].labels.tolist() == [1, 1]
    assert patches[v].labels.tolist() == ([1, 1] if spread else [1])
    assert (s.last_stats["spread_patches"], s.last_stats["patches"]) == ((1, 2) if spread else (0, 1))
    if spread:
        point = np.asarray(v) + patches[v].points[-1]
        assert planning.holding([u], point) and planning.prob_at(patches[v].prob, v, point) == 1.0


def test_a_positive_reclick_expands_into_neighbours_its_grown_mask_reaches() -> None:
    s, _ = _clicked_sphere(75.0, BallOracle(), cpp_mode="geometric")
    assert s.last_stats["cpp_patches"] == 0  # a ball of radius 12 around the centre stays off every slab
    (u,) = s._vol.targets["default"].snapshot.patches
    s.add_click(tuple(s._vol.grid.model_to_lps(np.asarray(u) + (44, 32, 32))), frame="lps")  # in U's core
    patches = s._vol.targets["default"].snapshot.patches
    assert s.last_stats["new_patch"] == 0.0 and s.last_stats["cpp_patches"] >= 1
    assert planning.neighbour_start(u, (1, 0, 0)) in patches  # the grown ball reaches the +x slab


def test_partial_repaint_equals_full_recompute() -> None:
    s, _ = _clicked_sphere(75.0, ThresholdOracle(), max_patches=5)
    s.add_click((20, 55, 30))
    s.add_click((90, 50, 30))
    incremental = s.mask().copy()
    tgt = s._vol.targets["default"]
    tgt.mask[:] = 0
    s._repaint(tgt, list(tgt.snapshot.patches))
    assert np.array_equal(incremental, s.mask())


def test_remove_target_frees_only_that_target(random_predictor: Predictor, sphere_image) -> None:  # noqa: ANN001
    s = Session(random_predictor, SessionConfig(use_cpp=False))
    s.set_volume(sphere_image[0])
    s.add_click((45, 40, 20), target="a")
    s.add_click((45, 40, 20), target="b")
    assert s.remove_target("a") and not s.remove_target("a")
    assert s.targets == ("b",)


def test_slab_click_is_the_deepest_point_of_the_mask_where_u_meets_v() -> None:
    mask = np.zeros((64, 64, 64), bool)
    zz, yy = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    mask[:, :, 20:] = (((yy - 40) ** 2 + (zz - 20) ** 2) <= 49)[:, :, None]  # a tube along +x, axis (y, z) = (40, 20)
    depth_map = interior_depth(mask)
    depth, (x, y, z) = planning.slab_click(depth_map, (0, 0, 0), (48, 0, 0))
    assert depth >= 7 and (y, z) == (40.0, 20.0) and 0 <= x < planning.OVERLAP  # in V's voxels, inside the slab
    assert mask[int(z), int(y), int(x) + 48]
    assert planning.slab_click(depth_map, (0, 0, 0), (-48, 0, 0))[0] == 0.0  # the tube does not reach the -x slab
    assert planning.slab_click(depth_map, (0, 0, 0), (0, 200, 0))[0] == 0.0  # no overlap at all


@pytest.mark.parametrize("offset", [48, -48])
def test_a_thick_structure_is_clicked_far_into_v_and_a_thin_one_at_its_deepest_point(offset: int) -> None:
    zz, yy, xx = np.meshgrid(np.arange(64), np.arange(64), np.arange(64), indexing="ij")
    far_x = planning.OVERLAP - 1 if offset > 0 else PATCH_SIZE - planning.OVERLAP  # V's voxel deepest into V
    for centre_radius, reach_depth, expect_far in ((14, 8.0, True), (4, 8.0, False), (14, math.inf, False)):
        radius = centre_radius - np.abs(xx - 32) / 16  # a cone along x, thickest at U's centre
        cone = (yy - 32) ** 2 + (zz - 30) ** 2 <= radius ** 2
        depth, (x, y, z) = planning.slab_click(interior_depth(cone), (0, 0, 0), (offset, 0, 0), reach_depth)
        assert (y, z) == (32.0, 30.0) and depth >= 1  # on the cone's axis either way
        in_slab = 0 <= x < planning.OVERLAP if offset > 0 else PATCH_SIZE - planning.OVERLAP <= x < PATCH_SIZE
        assert in_slab and (x == far_x) == expect_far, (centre_radius, reach_depth, x)


@pytest.mark.parametrize("name", ["cpp_reach_depth", "spread_positive_depth", "spread_negative_depth"])
@pytest.mark.parametrize("depth", [-1.0, math.nan])
def test_an_unusable_depth_is_refused(name: str, depth: float) -> None:
    with pytest.raises(ValueError, match=name):
        SessionConfig(**{name: depth})


@pytest.mark.parametrize("mode", ["off", "Geometric", ""])
def test_an_unknown_cpp_mode_is_refused(mode: str) -> None:
    with pytest.raises(ValueError, match=f"cpp_mode .*got '{mode}'"):
        SessionConfig(cpp_mode=mode)  # type: ignore[arg-type]


def test_a_reach_depth_without_geometric_cpp_is_reported(random_predictor, caplog) -> None:
    with caplog.at_level("WARNING", logger="CTSAM3DLib.engine.session"):
        Session(random_predictor, SessionConfig(cpp_mode="network", cpp_reach_depth=10))
    assert "cpp_reach_depth 10 is ignored" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="CTSAM3DLib.engine.session"):
        Session(random_predictor, SessionConfig(cpp_mode="geometric", cpp_reach_depth=10))
        Session(random_predictor, SessionConfig(cpp_mode="network"))
    assert "ignored" not in caplog.text


def test_geometric_cpp_expands_without_the_cpp_network() -> None:
    oracle = ThresholdOracle()
    s, gt = _clicked_sphere(75.0, oracle, max_patches=64, cpp_mode="geometric")
    assert oracle.cpp_calls == 0 and s.last_stats["cpp_patches"] >= 6
    mask = s.mask().astype(bool)
    assert (gt & ~mask).sum() <= 0.002 * gt.sum() and (mask & ~gt).sum() <= 0.002 * gt.sum()


class LeakyOracle(ThresholdOracle):
    """Segments like ThresholdOracle from a user click, but floods every CPP neighbour (it sees U's mask)."""

    def decode(self, feats, points, labels, prev_mask=None, image=None, refine_passes=0) -> torch.Tensor:  # noqa: ANN001
        out = super().decode(feats, points, labels, prev_mask, image)
        if prev_mask is not None:
            flooded = prev_mask.flatten(1).amax(1) > 0  # a neighbour: U's mask shows in its overlap
            out[flooded] = 1.0
        return out


def test_slab_agreement_drops_a_neighbour_that_spills_over_what_u_shows() -> None:
    a = np.zeros((64, 64, 64), bool)
    a[20:40, 20:40, 40:] = True  # U's structure crosses into the +x neighbour
    b = np.zeros_like(a)
    b[20:40, 20:40, :30] = True  # V continues it exactly
    assert planning.slab_agreement(a, (0, 0, 0), b, (48, 0, 0)) == 1.0
    assert planning.slab_agreement(a, (0, 0, 0), np.ones_like(a), (48, 0, 0)) < 0.2  # V floods the slab
    assert planning.slab_agreement(a, (0, 0, 0), b, (0, 200, 0)) == 0.0  # no shared region
    counts = {}
    for threshold in (0.0, 0.5):
        s, _ = _clicked_sphere(40.0, LeakyOracle(), max_patches=27, cpp_mode="geometric", cpp_min_agreement=threshold)
        counts[threshold] = s.last_stats["cpp_patches"]
    assert counts[0.0] >= 1 and counts[0.5] == 0


def test_geodesic_variant_decodes_with_the_pixels_of_the_patch_it_encoded(sphere_image) -> None:  # noqa: ANN001
    from CTSAM3DLib import build_model

    torch.manual_seed(0)
    predictor = Predictor(build_model("compact_geo"), "compact_geo", (-1000.0, 1000.0))
    encoded: list[torch.Tensor] = []
    decoded: list[torch.Tensor] = []
    encode, decode = predictor.encode, predictor.decode
    predictor.encode = lambda image: encoded.append(image.clone()) or encode(image)  # type: ignore[method-assign]
    predictor.decode = lambda *a, image=None, **k: decoded.append(image.clone()) or decode(*a, image=image, **k)  # type: ignore[method-assign]
    s = Session(predictor, SessionConfig(use_cpp=False))
    s.set_volume(sphere_image[0])
    s.add_click((45, 40, 20))
    s.add_click((47, 41, 20), is_positive=False)
    assert len(encoded) == 1 and len(decoded) == 2
    assert all(torch.equal(d, encoded[0]) for d in decoded)


def test_auto_cpp_mode_follows_the_checkpoint(tmp_path, random_predictor: Predictor) -> None:  # noqa: ANN001
    from CTSAM3DLib import build_model, load_model
    from CTSAM3DLib.model.checkpoint import read_checkpoint_file, save_checkpoint

    assert Session(random_predictor).cpp_mode == "network"  # no recommendation: the paper's CPP
    save_checkpoint(tmp_path / "m.pt", build_model("compact"), "compact", (-1000.0, 1000.0))
    ckpt = read_checkpoint_file(tmp_path / "m.pt")
    torch.save(dict(ckpt, cpp_mode="geometric"), tmp_path / "geo.pt")
    predictor = load_model(tmp_path / "geo.pt")
    assert Session(predictor).cpp_mode == "geometric"
    assert Session(predictor, SessionConfig(cpp_mode="network")).cpp_mode == "network"
    torch.save(dict(ckpt, cpp_mode="os.system('x')"), tmp_path / "odd.pt")  # unknown values are ignored
    assert Session(load_model(tmp_path / "odd.pt")).cpp_mode == "network"


def test_auto_cpp_agreement_follows_the_checkpoint(tmp_path, random_predictor: Predictor) -> None:  # noqa: ANN001
    from CTSAM3DLib import build_model, load_model
    from CTSAM3DLib.model.checkpoint import read_checkpoint_file, save_checkpoint

    assert Session(random_predictor).cpp_min_agreement == 0.0  # no recommendation: off
    save_checkpoint(tmp_path / "m.pt", build_model("compact"), "compact", (-1000.0, 1000.0))
    ckpt = read_checkpoint_file(tmp_path / "m.pt")
    torch.save(dict(ckpt, cpp_min_agreement=0.3), tmp_path / "agree.pt")
    predictor = load_model(tmp_path / "agree.pt")
    assert Session(predictor).cpp_min_agreement == 0.3
    assert Session(predictor, SessionConfig(cpp_min_agreement=0.0)).cpp_min_agreement == 0.0  # explicit wins
    for odd in (1.5, -0.1, "0.3", True):  # out of range or not a number: ignored
        torch.save(dict(ckpt, cpp_min_agreement=odd), tmp_path / "odd.pt")
        assert Session(load_model(tmp_path / "odd.pt")).cpp_min_agreement == 0.0


def test_refine_passes_follow_the_checkpoint_and_reach_every_network_call(tmp_path, sphere_image) -> None:  # noqa: ANN001
    from CTSAM3DLib import build_model, load_model
    from CTSAM3DLib.model.checkpoint import read_checkpoint_file, save_checkpoint

    save_checkpoint(tmp_path / "m.pt", build_model("compact"), "compact", (-1000.0, 1000.0))
    ckpt = read_checkpoint_file(tmp_path / "m.pt")
    assert Session(load_model(tmp_path / "m.pt")).refine_passes == 0  # no recommendation: none
    torch.save(dict(ckpt, refine_passes=2), tmp_path / "r.pt")
    predictor = load_model(tmp_path / "r.pt")
    assert Session(predictor).refine_passes == 2
    assert Session(predictor, SessionConfig(refine_passes=0)).refine_passes == 0  # explicit wins
    for odd in (-1, 99, 1.5, "1", True):  # out of range or not a whole number: ignored
        torch.save(dict(ckpt, refine_passes=odd), tmp_path / "odd.pt")
        assert Session(load_model(tmp_path / "odd.pt")).refine_passes == 0
    for bad in (-1, 9, 1.0):
        with pytest.raises(ValueError, match="refine_passes"):
            SessionConfig(refine_passes=bad)  # type: ignore[arg-type]

    seen: list[int] = []
    real = predictor.decode

    def spy(*args, refine_passes=0, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(refine_passes)
        return real(*args, refine_passes=refine_passes, **kwargs)

    predictor.decode = spy  # type: ignore[method-assign]
    image, _ = sphere_image
    s = Session(predictor, SessionConfig(refine_passes=1, cpp_mode="geometric"))
    s.set_volume(image)
    s.add_click((45, 40, 20))
    s.add_click((30, 40, 20), is_positive=False)
    assert seen and set(seen) == {1}  # the click, its CPP neighbours and the correction


def test_a_refinement_pass_reads_the_last_probabilities(random_predictor: Predictor) -> None:
    torch.manual_seed(1)
    image = torch.rand(2, 1, 64, 64, 64)
    feats = random_predictor.encode(image)
    points, labels = torch.tensor([[[30.0, 31.0, 32.0]], [[10.0, 20.0, 30.0]]]), torch.tensor([[1], [1]])
    once = random_predictor.decode(feats, points, labels)
    twice = random_predictor.decode(feats, points, labels, once)
    torch.testing.assert_close(random_predictor.decode(feats, points, labels, refine_passes=1), twice)
    assert not torch.allclose(once, twice)


def test_progress_counts_every_patch_the_network_runs_ring_by_ring() -> None:
    seen: list[ClickProgress] = []
    img, _ = _big_sphere(75.0)
    s = Session(ThresholdOracle(), SessionConfig(max_patches=64, batch_size=4))  # type: ignore[arg-type]
    s.set_volume(img)
    s.add_click((55, 55, 30), progress=seen.append)
    assert seen[0] == ClickProgress("click", 0, 0, 1) and seen[1] == ClickProgress("click", 0, 1, 1)
    assert [p.done for p in seen] == sorted(p.done for p in seen) and seen[-1].done == seen[-1].total
    rings = [p.ring for p in seen if p.stage == "cpp"]
    assert rings and rings == sorted(rings) and rings[0] == 1
    # every batch of at most 4 patches is reported, and the patches kept are among those run
    assert all(0 < b.done - a.done <= 4 for a, b in zip(seen, seen[1:]) if b.done != a.done)
    assert seen[-1].total >= s.last_stats["patches"]


def test_cancel_between_rings_leaves_the_target_as_it_was() -> None:
    img, _ = _big_sphere(75.0)
    s = Session(ThresholdOracle(), SessionConfig(max_patches=64))  # type: ignore[arg-type]
    s.set_volume(img)
    s.add_click((55, 55, 30), target="kept")
    before = s.mask("kept").copy()
    clicks, patches = s.clicks("kept"), s._vol.targets["kept"].snapshot.patches

    def cancel_at(stage: str) -> Callable[[ClickProgress], None]:
        def watch(p: ClickProgress) -> None:
            if p.stage == stage and p.done > 0:
                s.cancel()  # as a GUI thread would, while the worker runs the click
        return watch

    with pytest.raises(ClickCancelled, match="nothing was changed"):
        s.add_click((60, 50, 30), is_positive=False, target="kept", progress=cancel_at("click"))
    with pytest.raises(ClickCancelled):
        s.add_click((55, 55, 30), target="new", progress=cancel_at("cpp"))  # in CPP's first ring
    assert np.array_equal(s.mask("kept"), before) and s.clicks("kept") == clicks
    assert s._vol.targets["kept"].snapshot.patches is patches
    assert not s.mask("new").any() and s.clicks("new") == () and not s.undo("new")
    assert s.undo("kept") and not s.mask("kept").any()  # the history holds only the first click
    assert s.redo("kept") and np.array_equal(s.mask("kept"), before)
    s.add_click((55, 55, 30), target="new")  # a cancel does not stick to later clicks
    assert np.array_equal(s.mask("new"), before)


def test_batches_are_as_even_as_possible() -> None:
    from CTSAM3DLib.engine.runner import batches

    assert [sl.stop - sl.start for sl in batches(25, 8)] == [6, 6, 6, 7]
    assert [sl.stop - sl.start for sl in batches(8, 8)] == [8]
    assert [sl.stop - sl.start for sl in batches(9, 8)] == [4, 5]
    assert batches(0, 8) == []
    for n in range(1, 40):
        sizes = [sl.stop - sl.start for sl in batches(n, 8)]
        assert sum(sizes) == n and max(sizes) <= 8 and max(sizes) - min(sizes) <= 1 and len(sizes) == -(-n // 8)


def test_interior_depth_on_the_mask_box_equals_the_full_patch_distance_transform() -> None:
    rng = np.random.default_rng(3)
    zz, yy, xx = np.meshgrid(*[np.arange(PATCH_SIZE)] * 3, indexing="ij")
    masks = [np.zeros((PATCH_SIZE,) * 3, bool), np.ones((PATCH_SIZE,) * 3, bool)]
    for _ in range(12):  # balls and slabs anywhere, cut by the patch border or not, and noise
        c, r = rng.integers(-10, PATCH_SIZE + 10, 3), rng.integers(1, 40)
        masks.append((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < r ** 2)
        masks.append(masks[-1] | (rng.random(masks[-1].shape) < 0.01))
    masks.append(np.pad(np.ones((PATCH_SIZE,) * 3, bool)[1:], ((0, 1), (0, 0), (0, 0))))
    for mask in masks:
        full = np.ones(mask.shape) if mask.all() else ndimage.distance_transform_edt(mask)
        assert np.array_equal(interior_depth(mask), full)
