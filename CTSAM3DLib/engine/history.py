"""``History``: undo/redo stacks of immutable snapshots (one per click)."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class History(Generic[T]):
    """Undo/redo over immutable states: ``push`` the state a change replaces."""

    def __init__(self) -> None:
        self._undo: list[T] = []
        self._redo: list[T] = []

    def push(self, previous: T) -> None:
        """Record ``previous`` before a new change; clears the redo stack."""
        self._undo.append(previous)
        self._redo.clear()

    def undo(self, current: T) -> T | None:
        """Return the state to restore (None if nothing to undo); ``current`` becomes redoable."""
        if not self._undo:
            return None
        self._redo.append(current)
        return self._undo.pop()

    def redo(self, current: T) -> T | None:
        """Return the state to re-apply (None if nothing to redo)."""
        if not self._redo:
            return None
        self._undo.append(current)
        return self._redo.pop()

    @property
    def can_undo(self) -> bool:
        """Whether ``undo`` would change anything."""
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        """Whether ``redo`` would change anything."""
        return bool(self._redo)
