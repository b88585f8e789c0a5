"""Undo history bounded in bytes; targets and volumes validated and never re-created by reading."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from test_session import ThresholdOracle

from CTSAM3DLib import Session, SessionConfig
from CTSAM3DLib.engine.history import History, trim
from CTSAM3DLib.io.readers import ImageReadError


def test_history_counts_bytes_and_trims_the_oldest_steps_first() -> None:
    sizes = {"a": 10, "b": 20, "c": 30, "d": 40}
    first, second = History[str](lambda kept, other: sizes[kept]), History[str](lambda kept, other: sizes[kept])
    first.push("a", "b")   # oldest step (10 bytes)
    second.push("b", "c")  # 20 bytes
    first.push("c", "d")   # newest (30 bytes)
    assert first.nbytes + second.nbytes == 60
    assert trim([first, second], 50) == 50 and first.depth == (1, 0)  # "a" went first
    assert trim([first, second], 30) == 30 and second.depth == (0, 0)
    assert first.undo("d") == "c" and first.nbytes == sizes["d"]  # the current state is now kept for redo


@pytest.mark.parametrize("clicks", [60, pytest.param(500, marks=pytest.mark.slow)])
def test_many_clicks_stay_within_the_history_budget(sphere_image, clicks: int) -> None:  # noqa: ANN001
    budget = 3 << 20  # six 64^3 float16 patch states
    s = Session(ThresholdOracle(), SessionConfig(use_cpp=False, history_bytes=budget))  # type: ignore[arg-type]
    s.set_volume(sphere_image[0])
    rng = np.random.default_rng(0)
    for n in range(clicks):
        x, y, z = 45 + rng.integers(-3, 4), 40 + rng.integers(-3, 4), 20 + rng.integers(-2, 3)
        s.add_click((x, y, z), target="a" if n % 2 else "b")
        held = _bytes_held_by_history(s)
        assert held <= budget, f"click {n + 1}: history holds {held} bytes"
    assert s.undo("a") and s.undo("b")  # recent steps are still undoable
    assert len(s.clicks("a")) == clicks // 2 - 1


def _bytes_held_by_history(s: Session) -> int:
    """Bytes of patch arrays reachable only through the undo/redo stacks (not by any current state)."""
    current = {id(p.prob) for t in s._vol.targets.values() for p in t.snapshot.patches.values()}
    held: dict[int, int] = {}
    for t in s._vol.targets.values():
        for entry in t.history._undo + t.history._redo:
            for p in entry.state.patches.values():
                if id(p.prob) not in current:
                    held[id(p.prob)] = p.prob.nbytes
    return sum(held.values())


def test_reading_a_removed_target_does_not_recreate_it(sphere_image) -> None:  # noqa: ANN001
    s = Session(ThresholdOracle(), SessionConfig(use_cpp=False))  # type: ignore[arg-type]
    s.set_volume(sphere_image[0])
    s.add_click((45, 40, 20), target="liver")
    live = s.mask("liver")
    assert live.any() and not live.flags.writeable
    s.add_click((40, 40, 20), is_positive=False, target="liver")
    assert np.array_equal(live, s.mask("liver"))  # a live view, as documented
    assert s.remove_target("liver")
    assert not s.mask("liver").any() and s.clicks("liver") == () and not s.undo("liver") and not s.redo("liver")
    assert s.targets == ()


@pytest.mark.parametrize("kind", ["nan", "inf", "vector", "2d"])
def test_set_volume_validates_the_image_like_the_cli(kind: str) -> None:
    array = np.zeros((8, 9, 10), np.float32)
    if kind in ("nan", "inf"):
        array[2, 3, 4] = np.nan if kind == "nan" else np.inf
        image = sitk.GetImageFromArray(array)
    elif kind == "vector":
        image = sitk.GetImageFromArray(np.zeros((8, 9, 10, 3), np.float32), isVector=True)
    else:
        image = sitk.GetImageFromArray(np.zeros((9, 10), np.float32))
    s = Session(ThresholdOracle())  # type: ignore[arg-type]
    with pytest.raises(ImageReadError, match="Session.set_volume"):
        s.set_volume(image)
    assert not s.is_volume_set
