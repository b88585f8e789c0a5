"""scripts/bundle_weights.py: float16 storage, recorded engine settings, the geodesic-skip calibration."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

from CTSAM3DLib import build_model
from CTSAM3DLib.cli.segment import parse_number_pair
from CTSAM3DLib.model.checkpoint import load_network, save_checkpoint
from CTSAM3DLib.model.decoder import GEODESIC_SKIP_GAIN, GEODESIC_SKIP_START


@pytest.fixture()
def script(repo_script: Callable[[str], ModuleType]) -> ModuleType:
    """``scripts/bundle_weights.py`` as a module."""
    return repo_script("bundle_weights")


def test_bundling_sets_the_skip_weights_and_keeps_the_trained_ones_in_the_provenance(script: ModuleType,
                                                                                     tmp_path: Path) -> None:
    torch.manual_seed(3)
    net = build_model("compact_geo_skip")
    save_checkpoint(tmp_path / "run.pt", net, "compact_geo_skip", (-1000.0, 1000.0))
    script.main(str(tmp_path / "run.pt"), str(tmp_path / "bundled.pt"), "geometric", 0.3, (5.0, -1.0))
    loaded, variant, _, info = load_network(tmp_path / "bundled.pt")
    assert variant == "compact_geo_skip"
    assert info["cpp_mode"] == "geometric" and info["cpp_min_agreement"] == 0.3
    assert torch.allclose(loaded.mask_decoder.geodesic_skip * GEODESIC_SKIP_GAIN, torch.tensor([5.0, -1.0]), atol=1e-2)
    assert info["provenance"]["geodesic_skip_set"] == [5.0, -1.0]
    assert info["provenance"]["geodesic_skip_trained"] == pytest.approx(list(GEODESIC_SKIP_START), abs=1e-3)
    other = {k: v for k, v in loaded.state_dict().items() if k != "mask_decoder.geodesic_skip"}
    assert all(torch.allclose(v, net.state_dict()[k].half().float()) for k, v in other.items() if v.is_floating_point())


def test_a_network_without_the_skip_is_refused_by_name(script: ModuleType, tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "run.pt", build_model("compact_geo"), "compact_geo", (-1000.0, 1000.0))
    with pytest.raises(SystemExit, match="no geodesic logit skip.*compact_geo"):
        script.main(str(tmp_path / "run.pt"), str(tmp_path / "bundled.pt"), geodesic_skip=(5.0, -1.0))
    assert not (tmp_path / "bundled.pt").exists()


@pytest.mark.parametrize("text", ["5", "a,b", "nan,1", "1,2,3"])
def test_a_malformed_number_pair_is_named(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected skip weights W_P,W_N|must be finite"):
        parse_number_pair(text, "skip weights W_P,W_N")


def test_bundling_records_the_refine_passes_and_keeps_where_the_weights_came_from(script: ModuleType,
                                                                                  tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "run.pt", build_model("compact"), "compact", (-1000.0, 1000.0))
    script.main(str(tmp_path / "run.pt"), str(tmp_path / "bundled.pt"), refine_passes=1)
    script.main(str(tmp_path / "bundled.pt"), str(tmp_path / "again.pt"), refine_passes=2)
    first, again = load_network(tmp_path / "bundled.pt")[3], load_network(tmp_path / "again.pt")[3]
    assert first["refine_passes"] == 1 and again["refine_passes"] == 2
    assert again["provenance"]["bundled_from"] == first["provenance"]["bundled_from"] == "run.pt"
    with pytest.raises(SystemExit, match="--refine-passes"):
        script.main(str(tmp_path / "run.pt"), str(tmp_path / "bad.pt"), refine_passes=9)
    assert not (tmp_path / "bad.pt").exists()


def test_a_broken_source_ends_with_its_message_and_writes_nothing(script: ModuleType, tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "run.pt", build_model("compact"), "compact", (-1000.0, 1000.0))
    (tmp_path / "cut.pt").write_bytes((tmp_path / "run.pt").read_bytes()[:1000])
    with pytest.raises(SystemExit, match="cut.pt.*corrupt, truncated"):
        script.main(str(tmp_path / "cut.pt"), str(tmp_path / "bundled.pt"), refine_passes=1)
    assert not (tmp_path / "bundled.pt").exists()
