"""``History``: undo/redo stacks of immutable snapshots (one per click), bounded in bytes.

Each stored snapshot carries the bytes that only it keeps alive (``cost(stored, neighbour)``:
what it does not share with the state it was replaced by, or restored from). The sum over all
stored snapshots is the memory the history holds; `trim` drops the oldest steps, across any
number of histories, until that sum fits a budget.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# Ages of stored steps, shared by all histories so that `trim` can find the oldest across targets.
_AGE = itertools.count()


@dataclass(frozen=True)
class _Entry(Generic[T]):
    state: T
    nbytes: int
    age: int


class History(Generic[T]):
    """Undo/redo over immutable states: ``push`` the state a change replaces.

    Args:
        cost: ``cost(stored, other)`` = bytes ``stored`` keeps alive that ``other`` does not
            share (default: every state is free).
    """

    def __init__(self, cost: Callable[[T, T], int] | None = None) -> None:
        self._cost = cost or (lambda _stored, _other: 0)
        self._undo: list[_Entry[T]] = []
        self._redo: list[_Entry[T]] = []

    def push(self, previous: T, current: T | None = None) -> None:
        """Record ``previous`` before it is replaced by ``current``; clears the redo stack."""
        nbytes = 0 if current is None else self._cost(previous, current)
        self._undo.append(_Entry(previous, nbytes, next(_AGE)))
        self._redo.clear()

    def undo(self, current: T) -> T | None:
        """Return the state to restore (None if nothing to undo); ``current`` becomes redoable."""
        if not self._undo:
            return None
        restored = self._undo.pop().state
        self._redo.append(_Entry(current, self._cost(current, restored), next(_AGE)))
        return restored

    def redo(self, current: T) -> T | None:
        """Return the state to re-apply (None if nothing to redo)."""
        if not self._redo:
            return None
        restored = self._redo.pop().state
        self._undo.append(_Entry(current, self._cost(current, restored), next(_AGE)))
        return restored

    def clear(self) -> None:
        """Forget every stored step."""
        self._undo.clear()
        self._redo.clear()

    @property
    def can_undo(self) -> bool:
        """Whether ``undo`` would change anything."""
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        """Whether ``redo`` would change anything."""
        return bool(self._redo)

    @property
    def nbytes(self) -> int:
        """Bytes the stored steps keep alive (by ``cost``)."""
        return sum(e.nbytes for e in self._undo) + sum(e.nbytes for e in self._redo)

    @property
    def depth(self) -> tuple[int, int]:
        """``(undo steps, redo steps)`` stored."""
        return len(self._undo), len(self._redo)

    def _oldest(self) -> _Entry[T] | None:
        """The step `trim` drops first: the oldest undo step, else the farthest redo step."""
        return self._undo[0] if self._undo else (self._redo[0] if self._redo else None)

    def _drop_oldest(self) -> int:
        entry = self._undo.pop(0) if self._undo else self._redo.pop(0)
        return entry.nbytes


def trim(histories: Iterable[History[T]], max_bytes: int) -> int:
    """Drop the oldest steps of ``histories`` (oldest first, across all) until they hold at most ``max_bytes``.

    Returns:
        The bytes the histories hold afterwards.
    """
    histories = list(histories)
    total = sum(h.nbytes for h in histories)
    while total > max_bytes:
        candidates = [(entry.age, h) for h in histories if (entry := h._oldest()) is not None]
        if not candidates:
            break
        total -= min(candidates, key=lambda c: c[0])[1]._drop_oldest()
    return total
