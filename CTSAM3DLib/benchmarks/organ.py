"""The benchmark's organ case: clicks on the sample's liver as users make them (``ctsam3d benchmark``).

- The default click: a fresh session with default settings (CPP, refine passes and CPP mode as the
  checkpoint records them), one click at the liver's deepest voxel: wall time, patches, Dice.
- The correction click: the click simulator's next click on that result (`prompts.simulate.next_click`,
  as `ctsam3d evaluate` and the demo click), in the same session.
- The forced ring: every neighbour of the clicked patch expanded (the worst case), comparable across
  variants and the only CPP timing random weights give (their predictions decide no policy).

Arrays are ``(z, y, x)``, points ``(x, y, z)`` input voxel indices.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import SimpleITK as sitk
import torch

from CTSAM3DLib import bundled
from CTSAM3DLib.benchmarks.timing import MAX_SLOW_RUNS, dice, slow_runs, stats, timed
from CTSAM3DLib.engine.session import Session, SessionConfig
from CTSAM3DLib.io.readers import read_image
from CTSAM3DLib.model.predictor import Predictor
from CTSAM3DLib.prompts.simulate import deepest_click, next_click

# Structure of the organ case.
CPP_STRUCTURE = "liver"
# Patches of the forced worst-case CPP expansion (random weights): the clicked one and its 26 neighbours.
FORCED_RING_PATCHES = 27


@dataclass(frozen=True)
class CppCase:
    """The organ case: CT, one click (x, y, z) deep inside the organ, and the organ mask (z, y, x)."""

    image: sitk.Image
    point_ijk: tuple[float, float, float]
    mask: np.ndarray


def repo_data_dir() -> Path:
    """``../shared/data`` beside the source checkout (the project's shared CT folder)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"  # CTSAM3DLib/benchmarks/organ.py


def default_cpp_case() -> Path:
    """The bundled sample case, or the shared copy of it until the bundle exists."""
    sample = bundled.sample_dir()
    if (sample / "ct.nii.gz").is_file():
        return sample
    return repo_data_dir() / "totalseg-format" / "abdomen_pelvis"


def load_cpp_case(folder: Path) -> CppCase:
    """Read the organ case and click the organ's deepest voxel, as the evaluation protocol does.

    ``deepest_click``: in mm from the organ's boundary *or the scan's edge*; an organ the scan
    cuts is otherwise clicked on its last slice, half a patch of padding (the sample's liver:
    CPP Dice 0.016).

    Raises:
        FileNotFoundError: the folder lacks ``ct.nii.gz`` or the structure's mask.
        ValueError: the mask is empty or on another grid than the CT.
    """
    ct, seg = folder / "ct.nii.gz", folder / "segmentations" / f"{CPP_STRUCTURE}.nii.gz"
    if not ct.is_file() or not seg.is_file():
        raise FileNotFoundError(f"CPP case {folder} needs ct.nii.gz and segmentations/{CPP_STRUCTURE}.nii.gz "
                                "(TotalSegmentator layout); pass --cpp-case DIR.")
    image, mask_img = read_image(ct), read_image(seg)
    mask = sitk.GetArrayFromImage(mask_img) > 0
    if mask.shape != sitk.GetArrayFromImage(image).shape or not mask.any():
        raise ValueError(f"{seg} must be a non-empty mask on the grid of {ct}.")
    deepest = deepest_click(mask, image.GetSpacing())
    return CppCase(image, deepest.point_xyz, mask.astype(np.uint8))


def organ_fields(predictor: Predictor, case: CppCase, dev: torch.device, repeats: int, is_trained: bool,
                 warm: dict[str, float | None], samples: dict[str, list[float]]) -> dict[str, Any]:
    """The organ entries: the forced ring (``cpp_ring_s``, at most ``MAX_SLOW_RUNS`` runs) and, with
    trained weights, the default and correction clicks (``repeats`` runs; ``cpp_organ_s`` is the
    default click's p50 in seconds); random weights report the forced ring as ``cpp_organ_s``."""
    ring_mode = f"forced-{FORCED_RING_PATCHES}-ring" + ("" if is_trained else " (random weights)")
    key = "cpp_ring" if is_trained else "cpp_organ"
    ring_s, ring_patches = _time_forced_ring(predictor, case, dev, min(repeats, MAX_SLOW_RUNS), warm, samples, key)
    out: dict[str, Any] = {"cpp_ring_s": ring_s, "cpp_ring_patches": ring_patches}
    if not is_trained:
        return {**out, "cpp_organ_s": ring_s, "cpp_patches": ring_patches, "cpp_mode": ring_mode,
                "cpp_runs": len(samples[key])}
    clicks = _time_default_clicks(predictor, case, dev, repeats, warm, samples)
    return {**out, **clicks, "cpp_organ_s": clicks["default_click_ms"]["p50"] / 1000,
            "cpp_patches": clicks["default_click_patches"], "cpp_mode": "policy",
            "cpp_organ_dice": clicks["default_click_dice"], "cpp_runs": len(samples["default_click"])}


class _ForegroundPredictor:
    """Delegates to a Predictor but reports foreground everywhere: CPP then visits all 26 neighbours.

    The networks run exactly as usual (same shapes, same batches); only their output is replaced,
    so the timing is that of the worst-case expansion.
    """

    def __init__(self, inner: Predictor) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def decode(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.ones_like(self._inner.decode(*args, **kwargs))


def _time_forced_ring(predictor: Predictor, case: CppCase, dev: torch.device, runs: int,
                      warm: dict[str, float | None], samples: dict[str, list[float]], key: str) -> tuple[float, int]:
    """Median seconds of the forced ring (fresh session each run) and its patches; runs (ms) go to
    ``samples[key]``, the warm-up to ``warm[key]``."""
    net = cast(Predictor, _ForegroundPredictor(predictor))
    config = SessionConfig(max_patches=FORCED_RING_PATCHES, cpp_min_peak=-math.inf)
    sessions: list[Session] = []

    def once() -> float:
        session = Session(net, config)
        session.set_volume(case.image)
        sessions[:] = [session]
        return timed(functools.partial(session.add_click, case.point_ijk, True), dev)

    warm[key], times = slow_runs(once, runs)
    samples[key] = [1000 * t for t in times]
    return statistics.median(times), int(sessions[0].last_stats["patches"])


def _time_default_clicks(predictor: Predictor, case: CppCase, dev: torch.device, runs: int,
                         warm: dict[str, float | None], samples: dict[str, list[float]]) -> dict[str, Any]:
    """The default click and its correction, each run in a fresh session (module docstring).

    Returns ``default_click_ms`` / ``correction_click_ms`` (p50, p95), their patches and Dice; runs
    (ms) go to ``samples["default_click"]`` / ``samples["correction_click"]``, warm-ups to ``warm``.
    """
    corrections: list[float] = []
    found: dict[str, Any] = {}
    spacing = case.image.GetSpacing()

    def once() -> float:
        session = Session(predictor, SessionConfig())
        session.set_volume(case.image)
        seconds = timed(functools.partial(session.add_click, case.point_ijk, True), dev)
        found["default_click_patches"] = int(session.last_stats["patches"])
        found["default_click_dice"] = dice(session.mask(), case.mask)
        click = next_click(session.mask(), case.mask > 0, spacing)
        if click is not None:  # none: the first click was perfect
            corrections.append(timed(functools.partial(session.add_click, click.point_xyz, click.is_positive), dev))
            found["correction_click_patches"] = int(session.last_stats["patches"])
            found["correction_click_dice"] = dice(session.mask(), case.mask)
            found["correction_click"] = {"point_ijk": list(click.point_xyz), "positive": click.is_positive}
        return seconds

    warm["default_click"], times = slow_runs(once, runs)
    if warm["default_click"] is not None and corrections:
        warm["correction_click"] = 1000 * corrections.pop(0)
    samples["default_click"] = [1000 * t for t in times]
    samples["correction_click"] = [1000 * t for t in corrections]
    out = {"default_click_ms": stats(samples["default_click"]), **found}
    if corrections:
        out["correction_click_ms"] = stats(samples["correction_click"])
    return out
