"""Average two checkpoints of one network in weight space (a weight-space ensemble, as in WiSE-FT).

``OUT = (1 - alpha) * BASE + alpha * OTHER`` for every floating-point tensor whose key starts with
one of ``--only``'s prefixes (default: every tensor); the other tensors, the variant, the
intensity window and the recorded engine settings come from BASE. OTHER must be a run continued
from BASE (the same variant, keys and shapes): averaging a fine-tuned network with its start keeps
part of what the fine-tuning gained and part of what it forgot (docs/experiments/stage-18.md).
The recipe is appended to the provenance's ``averaged`` list; bundle the result with
``scripts/bundle_weights.py``.

Usage: python scripts/average_weights.py BASE OTHER OUT [--alpha A] [--only PREFIX ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from CTSAM3DLib.model.checkpoint import CheckpointError, atomic_torch_save, read_checkpoint_file


def main(base: str, other: str, out: str, alpha: float = 0.5, only: tuple[str, ...] = ()) -> None:
    """Write ``(1 - alpha) * base + alpha * other`` on the tensors under ``only`` to ``out``; exits naming bad input."""
    if not 0.0 <= alpha <= 1.0:
        raise SystemExit(f"--alpha is OTHER's share, between 0 and 1; got {alpha}.")
    try:
        ckpt, second = read_checkpoint_file(base), read_checkpoint_file(other)
    except CheckpointError as exc:
        raise SystemExit(str(exc)) from None
    ours, theirs = ckpt["model_state_dict"], second["model_state_dict"]
    if ckpt.get("variant") != second.get("variant") or ours.keys() != theirs.keys() or any(
            v.shape != theirs[k].shape for k, v in ours.items()):
        raise SystemExit(f"{base} and {other} are not the same network (variants {ckpt.get('variant')!r} and "
                         f"{second.get('variant')!r}, or different tensors): only a run and its continuation average.")
    chosen = {k for k, v in ours.items() if v.is_floating_point() and k.startswith(tuple(only) or "")}
    if not chosen:
        raise SystemExit(f"--only {' '.join(only)}: no floating-point tensor of {base} starts with that.")
    ckpt["model_state_dict"] = {k: ((1 - alpha) * v.float() + alpha * theirs[k].float()) if k in chosen
                                else (v.float() if v.is_floating_point() else v) for k, v in ours.items()}
    provenance = {k: v for k, v in ckpt.get("provenance", {}).items() if k not in ("bundled_from", "stored_dtype")}
    origin = ckpt.get("provenance", {}).get("bundled_from")  # a bundled base names the run it came from
    earlier = provenance.get("averaged", [])  # the averages the base itself came from, oldest first
    provenance["averaged"] = [*([earlier] if isinstance(earlier, dict) else earlier), {
        "base": base + (f" (bundled from {origin})" if origin else ""), "other": other, "alpha": alpha,
        "only": list(only) or ["all"], "tensors": len(chosen)}]
    ckpt["provenance"] = provenance
    atomic_torch_save(ckpt, Path(out))
    print(f"{out}: {len(chosen)} of {len(ours)} tensors averaged, {alpha} of {other}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("other")
    parser.add_argument("out")
    parser.add_argument("--alpha", type=float, default=0.5, help="OTHER's share (default 0.5)")
    parser.add_argument("--only", nargs="+", default=(), metavar="PREFIX",
                        help="average only tensors whose key starts with one of these (e.g. image_encoder)")
    args = parser.parse_args()
    main(args.base, args.other, args.out, args.alpha, tuple(args.only))
