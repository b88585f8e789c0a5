"""scripts/average_weights.py: a weight-space average of a run and its continuation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

from CTSAM3DLib import build_model
from CTSAM3DLib.model.checkpoint import load_network, save_checkpoint


@pytest.fixture()
def script(repo_script: Callable[[str], ModuleType]) -> ModuleType:
    """``scripts/average_weights.py`` as a module."""
    return repo_script("average_weights")


def _save(path: Path, variant: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = build_model(variant)
    save_checkpoint(path, net, variant, (-1000.0, 1000.0))
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_only_the_chosen_tensors_are_averaged_and_the_recipe_is_recorded(script: ModuleType, tmp_path: Path) -> None:
    base, other = _save(tmp_path / "base.pt", "compact", 1), _save(tmp_path / "other.pt", "compact", 2)
    script.main(str(tmp_path / "base.pt"), str(tmp_path / "other.pt"), str(tmp_path / "avg.pt"), 0.25,
                   ("image_encoder",))
    net, variant, _, info = load_network(tmp_path / "avg.pt")
    assert variant == "compact"
    for key, value in net.state_dict().items():
        if not value.is_floating_point():
            continue
        want = 0.75 * base[key] + 0.25 * other[key] if key.startswith("image_encoder") else base[key]
        assert torch.allclose(value, want, atol=1e-6), key
    assert info["provenance"]["averaged"][-1]["alpha"] == 0.25
    assert info["provenance"]["averaged"][-1]["only"] == ["image_encoder"]
    script.main(str(tmp_path / "avg.pt"), str(tmp_path / "other.pt"), str(tmp_path / "again.pt"))
    steps = load_network(tmp_path / "again.pt")[3]["provenance"]["averaged"]
    assert [step["alpha"] for step in steps] == [0.25, 0.5]  # an average of an average keeps both steps


def test_different_networks_unknown_prefixes_and_broken_files_are_refused_without_writing(script: ModuleType,
                                                                                          tmp_path: Path) -> None:
    _save(tmp_path / "a.pt", "compact", 1)
    _save(tmp_path / "b.pt", "compact_geo", 1)
    with pytest.raises(SystemExit, match="not the same network"):
        script.main(str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), str(tmp_path / "avg.pt"))
    with pytest.raises(SystemExit, match="no floating-point tensor"):
        script.main(str(tmp_path / "a.pt"), str(tmp_path / "a.pt"), str(tmp_path / "avg.pt"), 0.5, ("encoder",))
    (tmp_path / "cut.pt").write_bytes((tmp_path / "a.pt").read_bytes()[:1000])
    with pytest.raises(SystemExit, match="cut.pt.*corrupt, truncated"):
        script.main(str(tmp_path / "a.pt"), str(tmp_path / "cut.pt"), str(tmp_path / "avg.pt"))
    with pytest.raises(SystemExit, match="between 0 and 1"):
        script.main(str(tmp_path / "a.pt"), str(tmp_path / "a.pt"), str(tmp_path / "avg.pt"), 1.5)
    assert not (tmp_path / "avg.pt").exists()
