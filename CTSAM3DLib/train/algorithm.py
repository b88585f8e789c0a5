"""One optimiser step of Algorithm 1 (see `trainer`): encode U and V once, click rounds with
corrective clicks from the shared simulator, CPP both ways over the U/V pairs and the negative
neighbours W; `Algorithm1` is an ``nn.Module`` so that DDP can wrap it.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from CTSAM3DLib.geometry.model_space import MODEL_SPACING_MM
from CTSAM3DLib.model.ctsam3d import CTSAM3D
from CTSAM3DLib.model.decoder import PROMPT_CHANNELS
from CTSAM3DLib.prompts.click import Click
from CTSAM3DLib.prompts.heatmap import prompt_tensor
from CTSAM3DLib.prompts.simulate import next_click
from CTSAM3DLib.train.config import TrainConfig
from CTSAM3DLib.train.losses import centroid_heatmaps, cpp_loss, deepest_point_heatmaps, seg_loss


def corrective_clicks(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The next simulated click for each patch (the shared `next_click`, spacing 1.5 mm).

    Args:
        pred: bool ``[B, D, H, W]`` (z, y, x) current binary predictions.
        gt: bool, same shape.

    Returns:
        ``(points float32 [B, 1, 3] voxel (x, y, z), labels int64 [B, 1])``: label 1 for a click in
        a false negative, 0 in a false positive, -1 (ignored) where the prediction is perfect.
    """
    points = np.zeros((pred.shape[0], 1, 3), dtype=np.float32)
    labels = np.full((pred.shape[0], 1), -1, dtype=np.int64)

    def click_for(b: int) -> Click | None:
        return next_click(pred[b], gt[b], spacing_mm=(MODEL_SPACING_MM,) * 3)

    # The distance transforms release the GIL: a GPU step's 32 patches share the process's CPU
    # threads instead of running one after another (same clicks, in order).
    workers = min(pred.shape[0], torch.get_num_threads())
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            clicks = list(pool.map(click_for, range(pred.shape[0])))
    else:
        clicks = [click_for(b) for b in range(pred.shape[0])]
    for b, click in enumerate(clicks):
        if click is not None:
            points[b, 0] = click.point_xyz
            labels[b, 0] = 1 if click.is_positive else 0
    return points, labels


def hard_dice(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean Dice of binary ``[B, ...]`` masks (1 where both are empty)."""
    p, g = pred.flatten(1).float(), gt.flatten(1).float()
    inter, total = (p * g).sum(1), p.sum(1) + g.sum(1)
    return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total)).mean()


class Algorithm1(nn.Module):
    """The per-step computation of Algorithm 1 as a module, so that DDP can wrap it.

    Args:
        model: the network.
        config: rounds and loss weights.
    """

    def __init__(self, model: CTSAM3D, config: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config

    def forward(self, images: torch.Tensor, gts: np.ndarray, first_points: np.ndarray,
                offsets: np.ndarray | None = None, v_prior: np.ndarray | None = None,
                images_w: torch.Tensor | None = None, gts_w: np.ndarray | None = None,
                w_of: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Losses of one batch.

        Args:
            images: ``[2S, 1, 64, 64, 64]`` in [0, 1]: all U patches, then all V patches.
            gts: bool ``[2S, 64, 64, 64]`` masks.
            first_points: float32 ``[2S, 3]`` voxel (x, y, z) of each patch's first click.
            offsets: int ``[S, 3]`` V's first voxel minus U's (x, y, z); needed with ``v_prior``.
            v_prior: bool ``[S]``: V's first round gets U's round-1 probabilities where the two
                overlap as its previous mask, as the engine gives a CPP-opened patch.
            images_w: ``[K, 1, 64, 64, 64]`` negative neighbours W (no continuation), or None.
            gts_w: bool ``[K, 64, 64, 64]`` their masks.
            w_of: int ``[K]`` the U patch each W neighbours.

        Returns:
            ``loss`` (to minimise), ``seg_loss`` (mean over rounds, round 1 weighted by
            ``first_round_weight``), ``cpp_loss``, ``dice_r{n}``
            (hard Dice of round n's prediction), ``cpp_peak_pos`` / ``cpp_peak_neg`` (mean CPP heatmap
            maximum where the structure continues / does not) and ``cpp_hit`` (fraction of positive
            pairs whose peak lies in the structure), for logging.
        """
        cfg, dev = self.config, images.device
        n = images.shape[0]
        target = torch.from_numpy(gts[:, None].astype(np.float32)).to(dev)
        points = first_points[:, None, :].astype(np.float32)
        labels = np.ones((n, 1), dtype=np.int64)
        frozen = cfg.train_parts == "cpp"
        geo_images = images if self.model.prompt_channels > PROMPT_CHANNELS else None
        with torch.no_grad() if frozen else contextlib.nullcontext():
            feats = self.model.encode(images)
        prev: torch.Tensor | None = None
        seg_terms: list[torch.Tensor] = []
        out: dict[str, torch.Tensor] = {}
        cpp = torch.zeros((), device=dev)
        for r in range(cfg.rounds):
            with torch.no_grad() if frozen else contextlib.nullcontext():
                if r == 0 and v_prior is not None and offsets is not None and v_prior.any():
                    logits = self._first_round_with_prior(feats, geo_images, points, labels, offsets, v_prior)
                else:
                    prompt = prompt_tensor(torch.from_numpy(points).to(dev), torch.from_numpy(labels).to(dev), prev,
                                           image=geo_images)
                    logits = self.model.decode_logits(feats, prompt)
            seg_terms.append(seg_loss(logits, target, cfg.focal_weight, cfg.dice_weight, cfg.focal_gamma))
            prob = torch.sigmoid(logits.detach().float())
            pred = prob >= 0.5
            out[f"dice_r{r + 1}"] = hard_dice(pred, target > 0.5)
            if r == 0 and cfg.cpp_weight > 0:
                cpp = self._cpp(images, pred.to(images.dtype), gts, images_w, gts_w, w_of, out)
            if r + 1 < cfg.rounds:
                new_points, new_labels = corrective_clicks(pred[:, 0].cpu().numpy(), gts)
                points = np.concatenate([points, new_points], axis=1)
                labels = np.concatenate([labels, new_labels], axis=1)
                prev = prob
        weights = torch.ones(len(seg_terms), device=dev)
        weights[0] = cfg.first_round_weight
        seg = (torch.stack(seg_terms) * weights).sum() / weights.sum()
        out.update(loss=seg + cfg.cpp_weight * cpp, seg_loss=seg.detach(), cpp_loss=cpp.detach())
        return out

    def _first_round_with_prior(self, feats: list[torch.Tensor], images: torch.Tensor | None, points: np.ndarray,
                                labels: np.ndarray, offsets: np.ndarray, v_prior: np.ndarray) -> torch.Tensor:
        """Round 1 for U, then for V with U's probabilities (shifted into V) as V's previous mask.

        ``images`` are the patches for geodesic prompts (None for a model without them).
        """
        dev = feats[0].device
        half = points.shape[0] // 2
        pts, labs = torch.from_numpy(points).to(dev), torch.from_numpy(labels).to(dev)
        img_u, img_v = (None, None) if images is None else (images[:half], images[half:])
        logits_u = self.model.decode_logits([f[:half] for f in feats],
                                            prompt_tensor(pts[:half], labs[:half], None, image=img_u))
        prob_u = torch.sigmoid(logits_u.detach().float())
        prior = torch.zeros_like(prob_u)
        for i in np.flatnonzero(v_prior):
            prior[i] = shift_patch(prob_u[i], offsets[i])
        logits_v = self.model.decode_logits([f[half:] for f in feats],
                                            prompt_tensor(pts[half:], labs[half:], prior, image=img_v))
        return torch.cat([logits_u, logits_v])

    def _cpp(self, images: torch.Tensor, pred: torch.Tensor, gts: np.ndarray, images_w: torch.Tensor | None,
             gts_w: np.ndarray | None, w_of: np.ndarray | None, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """L_cpp both ways over the U/V pairs (V from U and U from V), plus the negative neighbours W."""
        cfg, dev = self.config, images.device
        n = images.shape[0]
        half = n // 2
        balanced = cfg.cpp_loss == "balanced"
        make_target = deepest_point_heatmaps if balanced else centroid_heatmaps
        swap = torch.cat([torch.arange(half, n), torch.arange(0, half)]).to(dev)
        gts_swap = gts[swap.cpu().numpy()]
        heat = self.model.predict_cpp(images, pred, images[swap])
        loss = cpp_loss(heat, make_target(gts_swap).to(dev), balanced) * n
        flat = heat.detach().float().flatten(1)
        out["cpp_peak_pos"] = flat.max(1).values.mean()
        hit = torch.from_numpy(gts_swap.reshape(n, -1)).to(dev).gather(1, flat.argmax(1, keepdim=True))
        out["cpp_hit"] = hit.float().mean()
        count = n
        if images_w is not None and gts_w is not None and w_of is not None:
            if len(w_of):
                idx = torch.from_numpy(w_of).to(dev)
                heat_w = self.model.predict_cpp(images[idx], pred[idx], images_w.to(dev))
                loss = loss + cpp_loss(heat_w, make_target(gts_w).to(dev), balanced) * len(w_of)
                count += len(w_of)
                out["cpp_peak_neg"] = heat_w.detach().float().flatten(1).max(1).values.mean()
            else:
                out["cpp_peak_neg"] = torch.tensor(float("nan"), device=dev)
        return loss / count


def shift_patch(prob: torch.Tensor, offset_xyz: np.ndarray) -> torch.Tensor:
    """Patch values ``[C, D, H, W]`` seen from a patch whose first voxel is ``offset_xyz`` further
    (V's voxel q shows U's voxel q + offset); 0 where the two patches do not overlap."""
    out = torch.zeros_like(prob)
    size = prob.shape[1:]  # (z, y, x)
    src, dst = [slice(None)], [slice(None)]
    for o, s in zip(np.asarray(offset_xyz)[::-1], size):
        o = int(o)
        if abs(o) >= s:
            return out
        src.append(slice(max(o, 0), s + min(o, 0)))
        dst.append(slice(max(-o, 0), s - max(o, 0)))
    out[tuple(dst)] = prob[tuple(src)]
    return out
