"""Training and the engine see the same patch and click and give the same prediction and Dice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from CTSAM3DLib.engine.session import Session, SessionConfig
from CTSAM3DLib.io.datasets import scan_datasets
from CTSAM3DLib.model.build import build_model
from CTSAM3DLib.model.predictor import Predictor
from CTSAM3DLib.train import TrainConfig
from CTSAM3DLib.train.cache import build_cache
from CTSAM3DLib.train.data import PairSampler
from CTSAM3DLib.train.algorithm import Algorithm1

_WINDOW = (-1000.0, 1000.0)


def _model_space_subject(root: Path) -> Path:
    """A TotalSegmentator-layout subject already on a 1.5 mm identity grid, so the engine's input grid
    is the model grid and a mask can be compared voxel for voxel with training's."""
    rng = np.random.default_rng(0)
    shape = (100, 100, 110)  # every 64^3 patch centred in the organ fits inside
    zz, yy, xx = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    organ = ((xx - 55) / 22) ** 2 + ((yy - 50) / 16) ** 2 + ((zz - 50) / 18) ** 2 < 1
    ct = np.full(shape, -120.0, np.float32) + rng.normal(0, 12, shape).astype(np.float32)
    ct[organ] += 200
    folder = root / "model_space"
    (folder / "segmentations").mkdir(parents=True)
    for array, path in ((ct.astype(np.int16), folder / "ct.nii.gz"),
                        (organ.astype(np.uint8), folder / "segmentations" / "organ.nii.gz")):
        img = sitk.GetImageFromArray(array)
        img.SetSpacing((1.5, 1.5, 1.5))
        img.SetOrigin((-30.0, 12.0, 5.0))
        sitk.WriteImage(img, str(path))
    return root


def test_first_click_prediction_matches_between_training_and_engine(tmp_path: Path) -> None:
    root = _model_space_subject(tmp_path / "data")
    scan = scan_datasets([root])
    cached, _ = build_cache(scan.subjects, tmp_path / "cache")
    cfg = TrainConfig(batch_size=1, center_jitter=0, aug_prob=0.0, intensity_prob=0.0, rounds=1, window_hu=_WINDOW)
    batch = PairSampler(cached, cfg).batch(0)
    torch.manual_seed(0)
    model = build_model("compact").eval()
    # training path: Algorithm 1's round 1, recording the logits it computes for U
    recorded: list[torch.Tensor] = []
    decode = model.decode_logits
    model.decode_logits = lambda feats, prompt: recorded.append(decode(feats, prompt)) or recorded[-1]  # type: ignore
    with torch.no_grad():
        Algorithm1(model, cfg)(batch.images, batch.gts, batch.first_points)
    del model.decode_logits
    train_pred = (torch.sigmoid(recorded[0][0, 0]) >= 0.5).numpy()
    gt_u = batch.gts[0]
    # engine path: the same click (U's first point) on the CT, no CPP
    start = batch.u_starts[0]
    click_xyz = start + batch.first_points[0]
    image = sitk.ReadImage(str(scan.subjects[0].image_path))
    assert cached[0].grid.shape_xyz == image.GetSize()  # the model grid is the image grid here
    session = Session(Predictor(model, "compact", _WINDOW), SessionConfig(use_cpp=False))
    session.set_volume(image)
    session.add_click(tuple(float(v) for v in click_xyz), True, frame="ijk")
    box = tuple(slice(int(s), int(s) + 64) for s in start[::-1])
    engine_pred = session.mask()[box] > 0
    np.testing.assert_allclose(batch.images[0, 0].numpy(),
                               np.clip((sitk.GetArrayFromImage(image)[box] - _WINDOW[0]) / 2000.0, 0, 1), atol=1e-6)

    def dice(a: np.ndarray, b: np.ndarray) -> float:
        return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))

    assert train_pred.any()
    assert abs(dice(train_pred, gt_u) - dice(engine_pred, gt_u)) < 1e-3
    assert (train_pred != engine_pred).mean() < 1e-3
