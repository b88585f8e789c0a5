"""A/B timing of the decoder's sparse first-click shortcut against the dense path, one process.

Prints, per run, the decoder time of one first click with the shortcut off (dense) and on,
interleaved so that machine noise hits both, and the largest output difference.

Usage: python scripts/ab_sparse_decoder.py [VARIANT] [RUNS]     (default: restv2_tiny 8; random weights)
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from CTSAM3DLib.model.build import build_model
from CTSAM3DLib.model.decoder import SPADE
from CTSAM3DLib.prompts.heatmap import prompt_tensor


def main(variant: str = "restv2_tiny", runs: int = 8) -> None:
    torch.manual_seed(0)
    model = build_model(variant).eval()
    prompt = prompt_tensor(torch.tensor([[[30.0, 31.0, 33.0]]]), torch.ones(1, 1, dtype=torch.long), None)
    times: dict[str, list[float]] = {"dense": [], "sparse": []}
    outputs: dict[str, torch.Tensor] = {}
    default = SPADE.SPARSE_MAX_FRACTION
    with torch.inference_mode():
        feats = model.encode(torch.rand(1, 1, 64, 64, 64))
        for _ in range(runs + 1):  # the first round is warm-up
            for name, fraction in (("dense", 0.0), ("sparse", default)):
                SPADE.SPARSE_MAX_FRACTION = fraction
                t = time.perf_counter()
                outputs[name] = model.decode_logits(feats, prompt)
                times[name].append(time.perf_counter() - t)
    SPADE.SPARSE_MAX_FRACTION = default
    for name, ts in times.items():
        print(f"{variant} {name:6s} decoder ms: median {1000 * statistics.median(ts[1:]):.1f}  "
              f"runs {[round(1000 * t) for t in ts[1:]]}")
    print(f"max |dense - sparse| = {(outputs['dense'] - outputs['sparse']).abs().max().item():.2e}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "restv2_tiny", int(sys.argv[2]) if len(sys.argv) > 2 else 8)
