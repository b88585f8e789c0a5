"""A tiny network variant for fast training tests (registered at test time, never shipped)."""

from __future__ import annotations

from CTSAM3DLib.model import build
from CTSAM3DLib.model.decoder import DecoderConfig
from CTSAM3DLib.model.encoder import EncoderConfig

# Name under which the test variant is registered.
TINY = "tiny_test"
TINY_VARIANT = build.Variant(
    EncoderConfig((8, 16, 32, 64), (1, 1, 1, 1), (1, 2, 4, 8), (8, 8, 16, 32)),
    DecoderConfig((8, 8, 16, 32), (32, 32, 16, 16, 8), (16, 8, 8, 8, 4), (8, 8, 8, 8, 8), (3, 3, 3, 1, 1), 1, False),
    (4, 8, 16), 1, 2,
)


def register_tiny() -> None:
    """Add the tiny variant to the registry (idempotent)."""
    build.VARIANTS.setdefault(TINY, TINY_VARIANT)
