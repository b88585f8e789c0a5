"""Tests of the training loop: click rounds, schedule, checkpoints, exact resume, fine-tuning, CLI."""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from CTSAM3DLib.api import load_model
from CTSAM3DLib.cli import train as cli_train
from CTSAM3DLib.model.checkpoint import load_network, save_checkpoint
from CTSAM3DLib.prompts.simulate import next_click
from CTSAM3DLib.train import TrainConfig, train
from CTSAM3DLib.train.algorithm import Algorithm1, corrective_clicks
from CTSAM3DLib.train.losses import seg_loss
from CTSAM3DLib.train.trainer import load_train_state, lr_at, rng_state, set_rng_state


def _box(lo: tuple[int, int, int], hi: tuple[int, int, int], size: int = 64) -> np.ndarray:
    m = np.zeros((size,) * 3, bool)
    m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return m


def test_corrective_clicks_pick_the_farthest_error_point() -> None:
    gt = _box((10, 10, 10), (31, 31, 31))  # 21^3 cube, centre voxel (20, 20, 20)
    pred_fn = gt & ~_box((10, 10, 10), (25, 25, 25))  # misses a 15^3 corner cube, centre (17, 17, 17)
    pred_fp = gt | _box((40, 40, 40), (61, 61, 61))  # a 21^3 false positive, centre (50, 50, 50)
    points, labels = corrective_clicks(np.stack([pred_fn, pred_fp, gt]), np.stack([gt, gt, gt]))
    assert points.shape == (3, 1, 3) and labels.tolist() == [[1], [0], [-1]]
    assert points[0, 0].tolist() == [17.0, 17.0, 17.0]
    assert points[1, 0].tolist() == [50.0, 50.0, 50.0]
    assert next_click(pred_fn, gt, (1.5, 1.5, 1.5)).point_xyz == (17.0, 17.0, 17.0)


def test_corrective_clicks_on_several_threads_are_the_serial_ones() -> None:
    """A batch's clicks run on the process's torch threads (GPU steps): same clicks, same order."""
    rng = np.random.default_rng(4)
    gts = np.stack([_box(tuple(rng.integers(5, 20, 3)), tuple(rng.integers(30, 60, 3))) for _ in range(6)])
    preds = np.stack([g ^ (rng.random(g.shape) < 0.01) for g in gts])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = corrective_clicks(preds, gts)
        torch.set_num_threads(3)
        pooled = corrective_clicks(preds, gts)
    finally:
        torch.set_num_threads(threads)
    assert all(np.array_equal(a, b) for a, b in zip(serial, pooled))
    assert (serial[1] >= 0).all()


class _StubNet(nn.Module):
    """Encoder/decoder stand-in with fixed predictions; records every prompt it is given."""

    prompt_channels = 3

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.logits = logits
        self.prompts: list[torch.Tensor] = []

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [image * self.w]

    def decode_logits(self, feats: list[torch.Tensor], prompt: torch.Tensor) -> torch.Tensor:
        self.prompts.append(prompt.clone())
        return self.logits + feats[0]

    def predict_cpp(self, image_u: torch.Tensor, mask_u: torch.Tensor, image_v: torch.Tensor) -> torch.Tensor:
        return image_v * self.w


def test_training_rounds_click_where_the_simulator_says() -> None:
    gt = _box((10, 10, 10), (31, 31, 31))
    fp = _box((40, 40, 40), (61, 61, 61))
    # patch 0 predicts nothing (FN = gt), patch 1 predicts gt plus a large false positive
    logits = torch.from_numpy(np.stack([np.full(gt.shape, -10.0), np.where(gt | fp, 10.0, -10.0)])[:, None]).float()
    net = _StubNet(logits)
    algo = Algorithm1(net, TrainConfig(rounds=3))  # type: ignore[arg-type]
    out = algo(torch.zeros(2, 1, 64, 64, 64), np.stack([gt, gt]), np.array([[20, 20, 20], [15, 15, 15]], np.float32))
    assert len(net.prompts) == 3
    first, second = net.prompts[0], net.prompts[1]
    assert first[:, 0].abs().sum() == 0  # round 1: points only, no previous mask
    torch.testing.assert_close(second[:, :1], torch.sigmoid(logits))  # later rounds feed the previous mask
    # round 2 adds next_click's point: patch 0 a positive click at the FN centre, patch 1 a negative one in the FP
    c0 = next_click(np.zeros_like(gt), gt, (1.5,) * 3)
    c1 = next_click(gt | fp, gt, (1.5,) * 3)
    assert c0.is_positive and not c1.is_positive and c1.point_xyz == (50.0, 50.0, 50.0)
    x, y, z = (int(v) for v in c1.point_xyz)
    assert float(second[1, 2, z, y, x]) == 1.0 and float(first[1, 2].abs().sum()) == 0.0  # N map
    assert float(second[0, 1, 20, 20, 20]) == 1.0  # P map at the first (and the FN-centre) click
    assert set(out) >= {"loss", "seg_loss", "cpp_loss", "dice_r1", "dice_r2", "dice_r3"}
    out["loss"].backward()
    assert net.w.grad is not None


class _PerRoundStub(_StubNet):
    """Stand-in whose prediction changes with the round (empty, then half the cube, then all)."""

    def __init__(self, per_round: list[torch.Tensor]) -> None:
        super().__init__(per_round[0])
        self.per_round = per_round

    def decode_logits(self, feats: list[torch.Tensor], prompt: torch.Tensor) -> torch.Tensor:
        self.prompts.append(prompt.clone())
        return self.per_round[len(self.prompts) - 1] + feats[0]


def test_first_round_weight_weights_round_one_in_the_segmentation_loss() -> None:
    gt = _box((10, 10, 10), (31, 31, 31))
    per_round = [torch.from_numpy(np.where(m, 10.0, -10.0))[None, None].float()
                 for m in (np.zeros_like(gt), _box((10, 10, 10), (20, 31, 31)), gt)]
    cfg = TrainConfig(rounds=3, cpp_weight=0.0)
    terms = [float(seg_loss(lg, torch.from_numpy(gt[None, None].astype(np.float32)), cfg.focal_weight,
                            cfg.dice_weight, cfg.focal_gamma)) for lg in per_round]
    for weight in (1.0, 3.0):
        algo = Algorithm1(_PerRoundStub(per_round), cfg.replace(first_round_weight=weight))  # type: ignore[arg-type]
        out = algo(torch.zeros(1, 1, 64, 64, 64), gt[None], np.array([[20, 20, 20]], np.float32))
        expected = (weight * terms[0] + terms[1] + terms[2]) / (weight + 2)
        assert float(out["seg_loss"]) == pytest.approx(expected, rel=1e-5)
    assert terms[0] > terms[1] > terms[2]  # so that the two weights give different losses
    with pytest.raises(ValueError, match="first_round_weight"):
        TrainConfig(first_round_weight=0.0)


def test_lr_schedule() -> None:
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, warmup_start_factor=0.1, lr_decay_steps=(50, 80), steps=100)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(5, cfg) == pytest.approx(5.5e-4)
    assert lr_at(10, cfg) == lr_at(49, cfg) == pytest.approx(1e-3)
    assert lr_at(50, cfg) == pytest.approx(1e-4) and lr_at(80, cfg) == pytest.approx(1e-5)


def test_rng_state_round_trips_through_weights_only_load(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.save({"rng": [state]}, tmp_path / "s.pt")
    set_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng"][0])
    got = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    assert got[2] == expected[2]


def _tiny_config(variant: str, **kw: object) -> TrainConfig:
    base = dict(variant=variant, steps=4, batch_size=1, rounds=2, lr=1e-3, warmup_steps=1, log_every=1,
                checkpoint_every=0, aug_prob=0.5, intensity_prob=0.5, seed=3, threads=1)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def test_run_checkpoints_and_exact_resume(tiny_variant: str, synthetic_data: Path, tmp_path: Path) -> None:
    cfg = _tiny_config(tiny_variant)
    cache = tmp_path / "cache"
    full = train(cfg, [synthetic_data], tmp_path / "full", cache_dir=cache, progress=False)
    train(cfg, [synthetic_data], tmp_path / "part", max_steps=2, cache_dir=cache, progress=False)
    assert load_train_state(tmp_path / "part" / "train_state.pt")["step"] == 2
    resumed = train(cfg, [synthetic_data], tmp_path / "part", resume=True, cache_dir=cache, progress=False)
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "part")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    assert a == b  # the steps after the resume give exactly the uninterrupted run's losses
    sa = torch.load(full, weights_only=True)["model_state_dict"]
    sb = torch.load(resumed, weights_only=True)["model_state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)

    # our checkpoint format, readable by the inference loaders
    model, variant, window, info = load_network(full)
    assert variant == tiny_variant and window == cfg.window_hu
    prov = info["provenance"]
    assert prov["steps"] == 4 and prov["config"] == cfg.to_dict() and prov["data_dirs"] == [str(synthetic_data)]
    assert {"wall_time_s", "hardware", "torch_version"} <= set(prov)
    assert load_model(full).window_hu == cfg.window_hu
    state = torch.load(tmp_path / "full" / "train_state.pt", weights_only=True)
    assert state["step"] == 4 and state["optimizer"]["state"] and len(state["rng"]) == 1
    seen = json.loads((tmp_path / "full" / "samples_per_subject.json").read_text())
    assert sum(seen.values()) == 4 * cfg.batch_size * cfg.samples_per_volume and state["samples_per_subject"] == seen
    assert json.loads((tmp_path / "part" / "samples_per_subject.json").read_text()) == seen  # resumed: the run's totals
    record = json.loads((tmp_path / "full" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["samples_per_s"] > 0 and {"seg_loss", "cpp_loss", "dice_r1", "dice_r2", "lr"} <= set(record)
    assert TrainConfig.from_file(tmp_path / "full" / "config.yaml") == cfg

    # an existing run is never overwritten, and a resume must use the same recipe
    with pytest.raises(ValueError, match="already holds a training run"):
        train(cfg, [synthetic_data], tmp_path / "full", cache_dir=cache, progress=False)
    with pytest.raises(ValueError, match=r"config differs .* lr"):
        train(cfg.replace(lr=5e-4), [synthetic_data], tmp_path / "full", resume=True, cache_dir=cache, progress=False)
    with pytest.raises(FileNotFoundError, match="Cannot resume"):
        train(cfg, [synthetic_data], tmp_path / "new", resume=True, cache_dir=cache, progress=False)

    # fine-tuning starts from the checkpoint's weights
    ft = cfg.replace(init_checkpoint=str(full), steps=1)
    train(ft, [synthetic_data], tmp_path / "ft", cache_dir=cache, progress=False)
    assert _losses(tmp_path / "ft")[1] < a[1]
    with pytest.raises(ValueError, match="holds variant"):
        train(ft.replace(variant="compact"), [synthetic_data], tmp_path / "ft2", cache_dir=cache, progress=False)


def test_a_new_config_stage_starts_from_the_last_stage_and_resumes_exactly(tiny_variant: str, synthetic_data: Path,
                                                                          tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    stage1 = train(_tiny_config(tiny_variant, steps=2), [synthetic_data], tmp_path / "s1", cache_dir=cache,
                   progress=False)
    # stage 2: the new recipe (flips/swaps, acquisition augmentation, V prior, balanced CPP with negatives,
    # pseudo-structures) starting from stage 1's weights
    cfg2 = _tiny_config(tiny_variant, steps=3, init_checkpoint=str(stage1), flip_prob=0.5, swap_prob=0.5,
                        blur_prob=0.5, thickness_prob=0.5, gamma_prob=0.5, v_prior_prob=1.0, cpp_loss="balanced",
                        cpp_negative_prob=1.0, pseudo_ratio=0.5, seed=7)
    full = train(cfg2, [synthetic_data], tmp_path / "s2", cache_dir=cache, progress=False)
    train(cfg2, [synthetic_data], tmp_path / "s2_part", max_steps=1, cache_dir=cache, progress=False)
    resumed = train(cfg2, [synthetic_data], tmp_path / "s2_part", resume=True, cache_dir=cache, progress=False)
    assert _losses(tmp_path / "s2") == _losses(tmp_path / "s2_part")
    sa = torch.load(full, weights_only=True)["model_state_dict"]
    sb = torch.load(resumed, weights_only=True)["model_state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    _, _, _, info = load_network(full)
    assert info["provenance"]["init_checkpoint"] == str(stage1)
    record = json.loads((tmp_path / "s2" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"cpp_peak_pos", "cpp_peak_neg", "cpp_hit"} <= set(record)


def test_a_geodesic_stage_grows_a_plain_checkpoint_and_starts_where_it_was(tiny_variant: str, synthetic_data: Path,
                                                                          tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from CTSAM3DLib.model import build

    geo_name = tiny_variant + "_geo"
    tiny = build.VARIANTS[tiny_variant]
    monkeypatch.setitem(build.VARIANTS, geo_name, replace(tiny, decoder=replace(tiny.decoder, prompt_channels=5)))
    cache = tmp_path / "cache"
    stage1 = train(_tiny_config(tiny_variant, steps=1), [synthetic_data], tmp_path / "s1", cache_dir=cache,
                   progress=False)
    cfg = _tiny_config(tiny_variant, steps=1, init_checkpoint=str(stage1), seed=11)
    train(cfg, [synthetic_data], tmp_path / "plain", cache_dir=cache, progress=False)
    geo = train(cfg.replace(variant=geo_name), [synthetic_data], tmp_path / "geo", cache_dir=cache, progress=False)
    # zero-initialised geodesic inputs: the same batch gives the same loss as the plain network
    assert _losses(tmp_path / "geo")[1] == pytest.approx(_losses(tmp_path / "plain")[1], rel=1e-5)
    model, variant, _, _ = load_network(geo)
    assert variant == geo_name and model.prompt_channels == 5


def test_a_frozen_geodesic_skip_keeps_its_weights_while_the_rest_trains(tiny_variant: str, synthetic_data: Path,
                                                                         tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from CTSAM3DLib.model import build

    skip_name = tiny_variant + "_geo_skip"
    tiny = build.VARIANTS[tiny_variant]
    monkeypatch.setitem(build.VARIANTS, skip_name,
                        replace(tiny, decoder=replace(tiny.decoder, prompt_channels=5, geodesic_skip=True)))
    cache = tmp_path / "cache"
    start = build.build_model(skip_name)
    start.mask_decoder.geodesic_skip.data[:] = torch.tensor([0.05, -0.01])  # as set by bundle_weights.py
    save_checkpoint(tmp_path / "start.pt", start, skip_name, (-1000.0, 1000.0))
    cfg = _tiny_config(skip_name, steps=3, lr=1e-2, warmup_steps=1, init_checkpoint=str(tmp_path / "start.pt"))
    runs = {frozen: load_network(train(cfg.replace(freeze_geodesic_skip=frozen), [synthetic_data],
                                       tmp_path / f"run{frozen}", cache_dir=cache, progress=False))[0]
            for frozen in (True, False)}
    assert torch.equal(runs[True].mask_decoder.geodesic_skip, start.mask_decoder.geodesic_skip)
    assert not torch.equal(runs[False].mask_decoder.geodesic_skip, start.mask_decoder.geodesic_skip)
    trained = [k for k, v in runs[True].state_dict().items()
               if k != "mask_decoder.geodesic_skip" and not torch.equal(v, start.state_dict()[k])]
    assert trained  # the rest of the network did train
    with pytest.raises(ValueError, match=f"variant '{tiny_variant}' has no geodesic logit skip"):
        train(_tiny_config(tiny_variant, steps=1, freeze_geodesic_skip=True), [synthetic_data], tmp_path / "plain",
              cache_dir=cache, progress=False)


def test_loss_goes_down_fast(tiny_variant: str, synthetic_data: Path, tmp_path: Path) -> None:
    cfg = _tiny_config(tiny_variant, steps=10, lr=1e-2, warmup_steps=2, aug_prob=0.0, intensity_prob=0.0,
                       exclude_structures=("small", "box"), cpp_weight=10.0)
    train(cfg, [synthetic_data], tmp_path / "run", progress=False)
    losses = _losses(tmp_path / "run")
    first, last = np.mean([losses[s] for s in (1, 2, 3)]), np.mean([losses[s] for s in (8, 9, 10)])
    assert last < 0.6 * first, losses


@pytest.mark.slow
def test_compact_recipe_lowers_the_loss_on_real_ct(shared_crop: Path, tmp_path: Path) -> None:
    cfg = TrainConfig.from_file(Path(__file__).resolve().parents[2] / "configs" / "compact_cpu.yaml")
    cfg = cfg.replace(steps=40, warmup_steps=5, lr_decay_steps=[], log_every=1, checkpoint_every=0, batch_size=1)
    train(cfg, [shared_crop], tmp_path / "run", progress=False)
    losses = _losses(tmp_path / "run")
    first, last = np.mean([losses[s] for s in range(1, 9)]), np.mean([losses[s] for s in range(33, 41)])
    assert last < 0.85 * first, losses


def test_cli_train(tiny_variant: str, synthetic_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                   caplog: pytest.LogCaptureFixture) -> None:
    parser = argparse.ArgumentParser(prog="ctsam3d")
    cli_train.add_parser(parser.add_subparsers(dest="command"))
    config = tmp_path / "tiny.yaml"
    config.write_text(_tiny_config(tiny_variant).to_yaml())
    args = parser.parse_args(["train", "--config", str(config), "--data", str(synthetic_data), "--output",
                              str(tmp_path / "run"), "--max-steps", "1", "--no-progress", "--set", "rounds=1",
                              "--set", "tensorboard=true"])
    assert args.func(args) == 0
    tensorboard_installed = importlib.util.find_spec("tensorboard") is not None
    assert tensorboard_installed or "tensorboard package is not installed" in caplog.text
    assert "Final checkpoint" in capsys.readouterr().out and (tmp_path / "run" / "model.pt").is_file()
    assert TrainConfig.from_file(tmp_path / "run" / "config.yaml").rounds == 1
    bad = parser.parse_args(["train", "--config", str(tmp_path / "missing.yaml"), "--data", str(synthetic_data),
                             "--output", str(tmp_path / "run2")])
    assert args.func(bad) == 2 and "does not exist" in capsys.readouterr().err
    nodata = parser.parse_args(["train", "--config", str(config), "--data", str(tmp_path / "nowhere"),
                                "--output", str(tmp_path / "run3")])
    assert args.func(nodata) == 2 and "does not exist" in capsys.readouterr().err
    if not torch.cuda.is_available():
        gpu = parser.parse_args(["train", "--config", str(config), "--data", str(synthetic_data), "--output",
                                 str(tmp_path / "run4"), "--device", "cuda"])
        assert args.func(gpu) == 2 and "CUDA is not available" in capsys.readouterr().err


def test_cpp_only_training_leaves_the_segmenter_untouched(tiny_variant: str, synthetic_data: Path,
                                                           tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    base = train(_tiny_config(tiny_variant, steps=1), [synthetic_data], tmp_path / "base", cache_dir=cache,
                 progress=False)
    cfg = _tiny_config(tiny_variant, steps=2, rounds=1, init_checkpoint=str(base), train_parts="cpp",
                       cpp_loss="balanced", cpp_negative_prob=1.0, lr=1e-2)
    tuned = train(cfg, [synthetic_data], tmp_path / "cpp", cache_dir=cache, progress=False)
    before = torch.load(base, weights_only=True)["model_state_dict"]
    after = torch.load(tuned, weights_only=True)["model_state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("cpp_predictor."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("cpp_predictor."))
