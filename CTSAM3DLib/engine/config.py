"""``SessionConfig``: the engine's settings (CPP, spreading, refine passes, memory budgets).

Settings left ``None`` follow what the checkpoint records (``Predictor.info``); see
`Session.cpp_mode`, `Session.cpp_min_agreement` and `Session.refine_passes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from CTSAM3DLib.engine import planning
from CTSAM3DLib.model.checkpoint import MAX_REFINE_PASSES

CppMode = Literal["auto", "network", "geometric"]
CPP_MODES: tuple[str, ...] = get_args(CppMode)


@dataclass(frozen=True)
class SessionConfig:
    """Engine settings.

    Attributes:
        use_cpp: expand a click into neighbouring patches with the CPP predictor.
        max_patches: most patches one click may create (the clicked one included).
        cpp_min_peak: a neighbour whose CPP heatmap peaks below this gets no click.
        cpp_mode: how a neighbour V gets its click: ``"network"`` (the CPP predictor's heatmap
            peak, the paper's method), ``"geometric"`` (no network: the deepest point of U's
            mask inside the slab U and V share, see `planning.slab_click`) or ``"auto"``: the
            mode the checkpoint was measured best with (``Predictor.info["cpp_mode"]``, set by
            ``scripts/bundle_weights.py --cpp-mode``), else ``"network"``.
        cpp_min_depth: geometric mode: a neighbour gets a click only where U's mask reaches at
            least this deep (model voxels, 1.5 mm) into the slab they share; a leak a few voxels
            thick then stays home, an organ crossing into V does not.
        cpp_reach_depth: geometric mode: where U's mask is at least this deep (model voxels) in
            the slab, V's click goes as far into V as the structure reaches instead of to its
            deepest point (`planning.slab_click`): large organs fill far better (the sample's
            liver from one click: Dice 0.82 at 10 vs 0.69), the heart can lose a little.
            ``math.inf``: never.
        spread_positive_depth: a positive click's addition spreads into every other patch that
            still calls it background where the added region reaches at least this deep (model
            voxels) into the slab they share (`planning.spread_clicks`): a patch that under-fills
            its part of the structure hears the correction too. ``math.inf``: never spread.
        spread_negative_depth: the same for a negative click's removal and the patches that still
            show it, so one correction takes a leak out of all the patches CPP carried it into,
            not only the clicked one; thinner removals (a trimmed edge, a thin airway) stay home.
        cpp_min_agreement: a CPP neighbour V is kept only if its mask and its source U's agree
            on the slab they share at least this well (Dice); a V whose prediction spills over
            what U shows there is a leak and is dropped (0: keep every non-empty V). ``None``:
            the threshold the checkpoint was measured with (``Predictor.info["cpp_min_agreement"]``,
            set by ``scripts/bundle_weights.py --cpp-min-agreement``), else 0.
        refine_passes: after each network call, decode this many more times with the patch's own
            probabilities as its previous mask Y (the clicks unchanged): the model re-reads its
            answer as it reads a previous round's, and a patch that under-fills its structure fills
            it (the `val` lungs from one click: Dice 0.44 -> 0.56 at one pass). Each pass costs one
            decoder run. ``None``: the passes the checkpoint was measured with
            (``Predictor.info["refine_passes"]``, set by ``scripts/bundle_weights.py
            --refine-passes``), else 0.
        cache_bytes: memory budget of the encoder-feature cache.
        batch_size: patches per forward pass during CPP expansion.
        history_bytes: memory budget of the undo/redo history of all targets together; when
            a click exceeds it, the oldest steps are forgotten first (0: no undo).
    """

    use_cpp: bool = True
    max_patches: int = planning.DEFAULT_MAX_PATCHES
    cpp_min_peak: float = 0.3
    cpp_mode: CppMode = "auto"
    cpp_min_depth: float = 1.0
    cpp_reach_depth: float = math.inf
    cpp_min_agreement: float | None = None
    spread_positive_depth: float = planning.SPREAD_POSITIVE_DEPTH
    spread_negative_depth: float = planning.SPREAD_NEGATIVE_DEPTH
    refine_passes: int | None = None
    cache_bytes: int = 1 << 30
    batch_size: int = 8
    history_bytes: int = 256 << 20

    def __post_init__(self) -> None:
        """Refuse an unknown CPP mode, a negative or non-numeric depth or pass count (a ValueError naming it)."""
        if self.cpp_mode not in CPP_MODES:
            raise ValueError(f"cpp_mode must be one of {', '.join(CPP_MODES)}, got {self.cpp_mode!r} "
                             "(use_cpp=False turns CPP off).")
        for name in ("cpp_reach_depth", "spread_positive_depth", "spread_negative_depth"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be 0 or more voxels (math.inf: off), got {getattr(self, name)}.")
        passes = self.refine_passes
        if passes is not None and not (isinstance(passes, int) and 0 <= passes <= MAX_REFINE_PASSES):
            raise ValueError(f"refine_passes must be a whole number from 0 to {MAX_REFINE_PASSES}, got {passes!r}.")
