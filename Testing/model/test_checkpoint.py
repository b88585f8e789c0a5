"""Checkpoints: our format, the release's params.pth layout, window parsing and bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from CTSAM3DLib import build_model, load_model
from CTSAM3DLib.model.checkpoint import CheckpointError, parse_release_window, save_checkpoint


def _inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 1, 64, 64, 64, generator=g)
    return image, torch.tensor([[[32.0, 30.0, 28.0], [10.0, 12.0, 40.0]]]), torch.tensor([[1, 0]])


def test_release_format_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("restv2_tiny").eval()
    sd = dict(model.state_dict())
    sd["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = torch.randn(3, 128)
    torch.save({"model_state_dict": sd, "epoch": 3}, tmp_path / "params.pth")
    (tmp_path / "config.py").write_text(
        "from easydict import EasyDict as edict\ncfg = edict()\ncfg.dataset = edict()\n"
        "cfg.dataset.normalization_params = edict()\n"
        "cfg.dataset.normalization_params.min_value = -1024\ncfg.dataset.normalization_params.max_value = 2048\n"
        "import os; os.system('echo pwned')\n")
    pred = load_model(tmp_path / "params.pth")
    assert pred.variant == "restv2_tiny" and pred.window_hu == (-1024.0, 2048.0)
    image, pts, lab = _inputs()
    with torch.inference_mode():
        from CTSAM3DLib.prompts.heatmap import prompt_tensor
        expected = torch.sigmoid(model(image, prompt_tensor(pts, lab, None)))
    got = pred.predict_patch(image, pts, lab)
    assert torch.allclose(got, expected, atol=1e-5)


def test_release_without_config_needs_window(tmp_path: Path) -> None:
    torch.save({"model_state_dict": build_model("restv2_tiny").state_dict()}, tmp_path / "params.pth")
    with pytest.raises(CheckpointError, match="config.py"):
        load_model(tmp_path / "params.pth")
    assert load_model(tmp_path / "params.pth", window_hu=(-500, 500)).window_hu == (-500.0, 500.0)


def test_our_format_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("compact").eval()
    save_checkpoint(tmp_path / "m.pt", model, "compact", (-900, 900), {"steps": 1})
    pred = load_model(tmp_path / "m.pt")
    assert pred.variant == "compact" and pred.window_hu == (-900.0, 900.0)
    assert pred.info["provenance"] == {"steps": 1}
    image, pts, lab = _inputs()
    a = pred.predict_patch(image, pts, lab)
    b = pred.predict_patch(image, pts, lab, prev_mask=None)
    assert torch.equal(a, b) and a.shape == (1, 1, 64, 64, 64) and float(a.min()) >= 0 and float(a.max()) <= 1


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04garbage"])
def test_corrupt_checkpoint(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "bad.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match="Cannot read checkpoint"):
        load_model(tmp_path / "bad.pt")


def test_unknown_layout(tmp_path: Path) -> None:
    torch.save({"weights": {}}, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="unknown layout"):
        load_model(tmp_path / "a.pt")
    torch.save({"model_state_dict": {"image_encoder.stem.proj.6.weight": torch.zeros(5, 5, 1, 1, 1)}}, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="unknown layout"):
        load_model(tmp_path / "b.pt", window_hu=(0, 1))


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("executed",))

    torch.save({"model_state_dict": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="Cannot read checkpoint"):
        load_model(tmp_path / "evil.pt")


def test_parse_window_variants(tmp_path: Path) -> None:
    cfg = tmp_path / "config.py"
    cfg.write_text("normalization_params = dict(min_value=-1000, max_value=1500.5)\n")
    assert parse_release_window(cfg) == (-1000.0, 1500.5)
    cfg.write_text("cfg = {'normalization_params': {'min_value': -200, 'max_value': 300}}\n")
    assert parse_release_window(cfg) == (-200.0, 300.0)
    cfg.write_text("x = 1\n")
    with pytest.raises(CheckpointError):
        parse_release_window(cfg)
