"""``TrainConfig``: every training hyper-parameter in one frozen dataclass.

A recipe is a YAML or TOML file of ``key: value`` pairs (``configs/compact_cpu.yaml``,
``configs/paper_8gpu.yaml``), read as data only (``yaml.safe_load`` / ``tomllib``) and never
executed. Unknown keys and wrong types are errors. The config is stored, as a plain dict, in
every checkpoint (``provenance["config"]``) and in ``train_state.pt``.

Units: steps are optimiser steps; a "sample" is one structure with its two overlapping
64^3 patches U and V, so a step processes ``batch_size * samples_per_volume`` samples
per process (``2 x`` that many patches).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib
import yaml

from CTSAM3DLib.model.build import VARIANTS


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe (Algorithm 1 of CT-SAM3D plus the optimisation schedule).

    Attributes:
        variant: network variant (``"compact"``, ``"compact_geo"``, ``"compact_geo_skip"`` or a
            release ``restv2_*``); with ``init_checkpoint`` it must match the checkpoint's, except
            that a checkpoint can start a run of a variant that only adds layers to it (``compact``
            -> ``compact_geo`` -> ``compact_geo_skip``; the new layers start at zero, the logit skip
            at its measured prior, `model.build.grown`).
        init_checkpoint: fine-tune from this checkpoint (ours or the release ``params.pth``);
            None trains from scratch.
        window_hu: intensity window ``(min, max)`` in HU, stored in the checkpoints.
        steps: total optimiser steps of the schedule (``--max-steps`` can stop earlier).
        batch_size: volumes drawn per step and process.
        samples_per_volume: structures (U/V pairs) drawn per volume.
        rounds: click rounds N per sample (round 1: one random foreground click; later rounds
            add the simulated corrective click and feed the previous mask).
        first_round_weight: weight of round 1's L_seg relative to each later round's (1: the plain
            mean over rounds, as the paper); above 1 stresses the single-click prediction that
            every interaction starts from.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay (not applied to norms and biases).
        betas: AdamW betas.
        warmup_steps: linear warm-up length.
        warmup_start_factor: learning-rate factor at step 0 of the warm-up.
        lr_decay_steps: steps at which the rate is multiplied by ``lr_decay_factor``.
        lr_decay_factor: step-decay factor (paper: 0.1).
        grad_clip: max gradient norm, applied separately to the segmenter (encoder + decoder) and
            to the CPP sub-network; 0 disables clipping.
        amp: bf16 autocast on CUDA (ignored on CPU).
        focal_weight: weight of the focal loss in L_seg (paper 0.2).
        dice_weight: weight of the Dice loss in L_seg (paper 0.8).
        focal_gamma: focal loss exponent.
        cpp_weight: weight of the CPP loss (MSE averaged over both directions). The CPP
            sub-network has its own parameters and AdamW is invariant to the scale of a loss, so
            this weight mostly affects the logged total loss.
        size_bias: fraction of structure draws weighted by size (the rest uniform per volume).
        size_power: size-weighted draws use probability proportional to voxels ** size_power.
        min_structure_voxels: structures with fewer model-space voxels are not sampled.
        center_jitter: U is centred on its first click, shifted by up to this many voxels per axis.
        neighbour_jitter: V = U shifted by 48 voxels towards a neighbour (as CPP expansion does at
            inference), plus up to this many voxels per axis.
        aug_prob: probability that a sample is augmented spatially.
        rotate_deg: max rotation (degrees) about each axis.
        scale_range: isotropic zoom range ``(min, max)``.
        intensity_prob: probability of intensity jitter.
        intensity_scale: HU are multiplied by ``1 + U(-s, s)``.
        intensity_shift_hu: then shifted by ``U(-d, d)`` HU.
        noise_std_hu: then get Gaussian noise with std ``U(0, n)`` HU.
        flip_prob: probability of a mirror flip along each axis (U, V, W and clicks together).
        swap_prob: probability of a random permutation of the patch axes.
        blur_prob: probability of a Gaussian blur with sigma ``U(blur_sigma)`` model voxels.
        blur_sigma: sigma range ``(min, max)`` of the blur.
        thickness_prob: probability of simulating thick slices (``U(thickness_mm)`` along z).
        thickness_mm: simulated slice-thickness range ``(min, max)`` in mm.
        gamma_prob: probability of a gamma curve ``U(gamma_range)`` on the windowed intensities.
        gamma_range: gamma range ``(min, max)``.
        v_prior_prob: probability that V's first round gets U's round-1 probabilities in their
            shared region as its previous mask Y, as the engine gives a CPP-opened patch (else Y = 0).
        cpp_loss: ``"mse"`` (the paper: plain MSE to a Gaussian at the structure's centroid) or
            ``"balanced"`` (MSE averaged separately over the target's peak region and the rest, to a
            Gaussian at the structure's deepest point, see `CTSAM3DLib.train.losses.cpp_loss`).
        cpp_negative_prob: probability that a sample also gets a negative neighbour W (a patch
            next to U that the structure does not reach) whose CPP target is empty.
        train_parts: ``"all"`` or ``"cpp"``: train only the CPP sub-network on the frozen segmenter's
            round-1 predictions (cheap: no backward pass through encoder and decoder), e.g. to give
            trained segmentation weights a CPP head without changing how they segment.
        freeze_geodesic_skip: keep a ``compact_geo_skip`` network's logit-skip weights as loaded
            (e.g. set on a validation split with ``scripts/bundle_weights.py --geodesic-skip``):
            training pulls the ``Gp`` weight down, as voxels left at saturated negative logits far
            from a click give it no gradient (docs/experiments/, stages 12 and 14).
        pseudo_ratio: fraction of samples drawn from class-agnostic pseudo-structures (HU-band
            regions of the training CTs, `CTSAM3DLib.train.pseudo`) instead of labels.
        pseudo_supervoxel_mm: sizes (mm across) of SLIC supervoxels added to the pseudo-structures;
            empty (default) adds none, as their blocky organ chunks taught under-filling.
        splits: dataset splits used for training (subjects without a split are always used).
        exclude_structures: structure-name patterns (fnmatch) never sampled, pseudo-structures
            included (``pseudo_<band>_<n>``: e.g. ``pseudo_soft_*`` keeps only the other HU bands).
        emphasis_structures: structure-name patterns (fnmatch) drawn ``emphasis_factor`` times as
            often as their size-biased share, e.g. structures the network still fits poorly.
        emphasis_factor: that multiplier (1: no emphasis).
        group_weights: share of the volume draws per subject group (`io.datasets.Subject.group`,
            e.g. ``{hn: 0.6, abdomen: 0.25, chest: 0.15}``), uniform over the subjects inside a group;
            groups not named are not drawn. Empty: every subject equally likely.
        data_workers: processes that build the cache and prepare batches ahead of the optimiser
            (0: all in the training process).
        seed: master seed (model init, sampling, clicks, augmentation).
        threads: torch CPU threads per process; 0 = auto: the cores not busy with other work
            (1-minute load average) divided among this node's processes. Fix it for bit-exact
            resumes on CPU (the thread count changes floating-point summation order).
        log_every: steps between metrics.jsonl lines.
        checkpoint_every: steps between periodic checkpoints (0: only the final one).
        tensorboard: also write TensorBoard events (needs the ``tensorboard`` package).
    """

    variant: str = "compact"
    init_checkpoint: str | None = None
    window_hu: tuple[float, float] = (-1000.0, 1000.0)
    steps: int = 2000
    batch_size: int = 2
    samples_per_volume: int = 1
    rounds: int = 5
    first_round_weight: float = 1.0
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    warmup_start_factor: float = 0.01
    lr_decay_steps: tuple[int, ...] = ()
    lr_decay_factor: float = 0.1
    grad_clip: float = 1.0
    amp: bool = True
    focal_weight: float = 0.2
    dice_weight: float = 0.8
    focal_gamma: float = 2.0
    cpp_weight: float = 1.0
    size_bias: float = 0.5
    size_power: float = 1.0
    min_structure_voxels: int = 20
    center_jitter: int = 16
    neighbour_jitter: int = 4
    aug_prob: float = 0.5
    rotate_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    intensity_prob: float = 0.5
    intensity_scale: float = 0.05
    intensity_shift_hu: float = 20.0
    noise_std_hu: float = 10.0
    flip_prob: float = 0.0
    swap_prob: float = 0.0
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    thickness_prob: float = 0.0
    thickness_mm: tuple[float, float] = (2.0, 5.0)
    gamma_prob: float = 0.0
    gamma_range: tuple[float, float] = (0.7, 1.5)
    v_prior_prob: float = 0.0
    cpp_loss: str = "mse"
    cpp_negative_prob: float = 0.0
    train_parts: str = "all"
    freeze_geodesic_skip: bool = False
    pseudo_ratio: float = 0.0
    pseudo_supervoxel_mm: tuple[float, ...] = ()
    splits: tuple[str, ...] = ("train",)
    exclude_structures: tuple[str, ...] = ()
    emphasis_structures: tuple[str, ...] = ()
    emphasis_factor: float = 1.0
    group_weights: dict[str, float] = dataclasses.field(default_factory=dict)
    data_workers: int = 0
    seed: int = 0
    threads: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    tensorboard: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name), _hints()[f.name]))
        self._validate()

    def _validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"Invalid training config: {msg}")

        need(self.variant in VARIANTS, f"variant {self.variant!r} is not one of {sorted(VARIANTS)}")
        need(self.window_hu[0] < self.window_hu[1], f"window_hu {self.window_hu} needs min < max")
        for name in ("steps", "batch_size", "samples_per_volume", "rounds", "log_every"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoint_every", "threads", "min_structure_voxels", "center_jitter",
                     "neighbour_jitter", "data_workers"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        need(self.lr > 0, f"lr must be positive, got {self.lr}")
        need(0 < self.first_round_weight < float("inf"),
             f"first_round_weight must be positive, got {self.first_round_weight}")
        need(0 < self.emphasis_factor < float("inf"), f"emphasis_factor must be positive, got {self.emphasis_factor}")
        need(all(0 <= w < float("inf") for w in self.group_weights.values())
             and (not self.group_weights or sum(self.group_weights.values()) > 0),
             f"group_weights must be non-negative with a positive sum, got {self.group_weights}")
        need(0 < self.warmup_start_factor <= 1, "warmup_start_factor must be in (0, 1]")
        need(0 < self.lr_decay_factor <= 1, "lr_decay_factor must be in (0, 1]")
        need(all(s > 0 for s in self.lr_decay_steps), "lr_decay_steps must be positive step numbers")
        for name in ("size_bias", "aug_prob", "intensity_prob", "flip_prob", "swap_prob", "blur_prob",
                     "thickness_prob", "gamma_prob", "v_prior_prob", "cpp_negative_prob", "pseudo_ratio"):
            need(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1]")
        need(0 < self.scale_range[0] <= self.scale_range[1], f"scale_range {self.scale_range} needs 0 < min <= max")
        for name in ("blur_sigma", "thickness_mm", "gamma_range"):
            lo, hi = getattr(self, name)
            need(0 < lo <= hi, f"{name} {getattr(self, name)} needs 0 < min <= max")
        need(self.train_parts in ("all", "cpp"), f"train_parts must be 'all' or 'cpp', got {self.train_parts!r}")
        need(self.train_parts == "all" or self.cpp_weight > 0, "train_parts 'cpp' needs cpp_weight > 0")
        need(self.cpp_loss in ("mse", "balanced"), f"cpp_loss must be 'mse' or 'balanced', got {self.cpp_loss!r}")
        need(all(mm > 0 for mm in self.pseudo_supervoxel_mm), "pseudo_supervoxel_mm sizes must be positive")
        need(self.center_jitter <= 20, "center_jitter must be <= 20 voxels (the first click stays in U's core)")
        need(min(self.focal_weight, self.dice_weight, self.cpp_weight, self.grad_clip) >= 0,
             "loss weights and grad_clip must be >= 0")

    # ---- construction ----------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "config") -> TrainConfig:
        """Build from a mapping; unknown keys are an error that names the closest known key."""
        if not isinstance(values, Mapping):
            raise ValueError(f"{source}: expected a mapping of key: value, got {type(values).__name__}.")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in values if k not in known]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(str(k), known, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(f"{source}: unknown config key(s) {', '.join(hints)}. Known keys: {', '.join(known)}.")
        return cls(**dict(values))

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) recipe. Data only, never executed.

        Raises:
            ValueError: unreadable file, unknown keys, wrong types or invalid values.
        """
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"Config file {p} does not exist.")
        text = p.read_text(encoding="utf-8")
        try:
            if p.suffix.lower() == ".toml":
                data = tomllib.loads(text)
            elif p.suffix.lower() in (".yaml", ".yml"):
                data = yaml.safe_load(text) or {}
            else:
                raise ValueError(f"Config file {p} must end in .yaml, .yml or .toml.")
        except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"Cannot parse config {p}: {exc}") from None
        return cls.from_dict(data, source=str(p))

    def replace(self, **overrides: Any) -> TrainConfig:
        """A copy with some fields changed (validated; unknown names are an error)."""
        return type(self).from_dict({**self.to_dict(), **overrides}, source="overrides")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists instead of tuples): YAML/JSON-safe and ``weights_only``-loadable."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, dict) else v
        return out

    def to_yaml(self) -> str:
        """The config as YAML text (what ``from_file`` reads back)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["lr=3e-4", "rounds=3"]`` -> ``{"lr": 3e-4, "rounds": 3}`` (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Override {item!r} must look like KEY=VALUE (e.g. lr=3e-4).")
        out[key.strip()] = yaml.safe_load(value)
    return out


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's type hint; convert lists to tuples and YAML number strings."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _coerce(name, value, hint)
    if origin is tuple:
        if isinstance(value, (str, int, float)) and len(args) == 2 and args[1] is Ellipsis:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"Invalid training config: {name} must be a list, got {value!r}.")
        if args and args[-1] is Ellipsis:
            return tuple(_coerce(name, v, args[0]) for v in value)
        if len(value) != len(args):
            raise ValueError(f"Invalid training config: {name} must have {len(args)} values, got {list(value)}.")
        return tuple(_coerce(name, v, a) for v, a in zip(value, args))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"Invalid training config: {name} must be a mapping of key: value, got {value!r}.")
        return {_coerce(name, k, args[0]): _coerce(name, v, args[1]) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"Invalid training config: {name} must be true or false, got {value!r}.")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"Invalid training config: {name} must be an integer, got {value!r}.")
        return value
    if hint is float:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"Invalid training config: {name} must be a number, got {value!r}.")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"Invalid training config: {name} must be a string, got {value!r}.")
        return value
    return value
