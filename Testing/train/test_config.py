"""Tests of TrainConfig: recipe files are data (YAML/TOML), validated, and round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from CTSAM3DLib.train.config import TrainConfig, parse_overrides

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["compact_cpu.yaml", "paper_8gpu.yaml"])
def test_shipped_recipes_load(name: str) -> None:
    cfg = TrainConfig.from_file(CONFIGS / name)
    assert cfg.rounds >= 1 and cfg.window_hu[0] < cfg.window_hu[1]
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_paper_recipe_matches_the_paper() -> None:
    cfg = TrainConfig.from_file(CONFIGS / "paper_8gpu.yaml")
    assert (cfg.lr, cfg.lr_decay_factor, cfg.rounds, cfg.focal_weight, cfg.dice_weight) == (1e-4, 0.1, 5, 0.2, 0.8)
    assert cfg.warmup_steps * 10 == cfg.steps and cfg.lr_decay_steps == (cfg.steps * 8 // 10,)
    assert (cfg.batch_size, cfg.samples_per_volume) == (4, 8)


def test_yaml_and_toml_give_the_same_config(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rounds: 3\nlr: 3e-4\nwindow_hu: [-500, 500]\nsplits: [train, val]\n")
    (tmp_path / "a.toml").write_text("rounds = 3\nlr = 3e-4\nwindow_hu = [-500, 500]\nsplits = ['train', 'val']\n")
    a, b = TrainConfig.from_file(tmp_path / "a.yaml"), TrainConfig.from_file(tmp_path / "a.toml")
    assert a == b and a.lr == 3e-4 and a.window_hu == (-500.0, 500.0) and a.splits == ("train", "val")
    assert TrainConfig.from_file(_write(tmp_path / "c.yaml", a.to_yaml())) == a


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, match", [
    ("lrr: 1e-4\n", r"unknown config key\(s\) 'lrr' \(did you mean 'lr'\?\)"),
    ("steps: 1.5\n", "steps must be an integer"),
    ("amp: 1\n", "amp must be true or false"),
    ("window_hu: [100, -100]\n", "needs min < max"),
    ("variant: huge\n", "variant 'huge' is not one of"),
    ("rounds: 0\n", "rounds must be >= 1"),
    ("steps: !!python/object/apply:os.system ['echo hacked']\n", "Cannot parse config"),
    ("- a\n- b\n", "expected a mapping"),
])
def test_bad_configs_are_clear_errors(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_file(_write(tmp_path / "bad.yaml", text))


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.yaml, \.yml or \.toml"):
        TrainConfig.from_file(_write(tmp_path / "cfg.py", "lr = 1"))
    with pytest.raises(ValueError, match="does not exist"):
        TrainConfig.from_file(tmp_path / "none.yaml")


def test_config_is_frozen_and_overrides_are_validated() -> None:
    cfg = TrainConfig()
    with pytest.raises(AttributeError):
        cfg.lr = 1.0  # type: ignore[misc]
    assert cfg.replace(**parse_overrides(["lr=3e-4", "rounds=2", "splits=[train]"])).rounds == 2
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["lr"])
    with pytest.raises(ValueError, match="unknown config key"):
        cfg.replace(nope=1)
