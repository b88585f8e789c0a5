"""``PatchCache``: scaled image patches and their encoder features, keyed by patch start.

Image features do not depend on clicks or targets, so every target of a session shares
one cache; a re-click in a cached patch then costs only the decoder. Least recently used
entries are evicted beyond a byte budget.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from CTSAM3DLib.aliases import IJK


@dataclass(frozen=True)
class PatchEntry:
    """One patch: ``image [1, 1, 64^3]`` in [0, 1] and its encoder features (batch 1).

    ``feats`` is empty until the patch is first decoded: CPP reads only the pixels of a
    neighbour, and a neighbour it does not prompt is never encoded.
    """

    image: torch.Tensor
    feats: tuple[torch.Tensor, ...] = ()

    @property
    def nbytes(self) -> int:
        """Memory held by the tensors of this entry."""
        return sum(t.numel() * t.element_size() for t in (self.image, *self.feats))


class PatchCache:
    """LRU cache of ``PatchEntry`` by patch start ``(x, y, z)`` with a byte budget."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[IJK, PatchEntry] = OrderedDict()
        self._bytes = 0

    def __contains__(self, start: IJK) -> bool:
        return start in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, start: IJK) -> PatchEntry | None:
        """The entry for ``start`` (marked recently used), or None."""
        entry = self._entries.get(start)
        if entry is not None:
            self._entries.move_to_end(start)
        return entry

    def put(self, start: IJK, entry: PatchEntry) -> None:
        """Store ``entry`` and evict the least recently used ones beyond the budget."""
        old = self._entries.pop(start, None)
        if old is not None:
            self._bytes -= old.nbytes
        self._entries[start] = entry
        self._bytes += entry.nbytes
        while self._bytes > self.max_bytes and len(self._entries) > 1:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.nbytes

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()
        self._bytes = 0
