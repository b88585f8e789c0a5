"""``PromptMarkups``: the include (green) and exclude (red) markups nodes whose placed points become clicks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# Colours (RGB in 0..1) of the positive (include) and negative (exclude) prompt points.
POSITIVE_COLOR, NEGATIVE_COLOR = (0.15, 0.8, 0.2), (0.9, 0.15, 0.15)


class PromptMarkups:
    """Positive (green) and negative (red) markups fiducial nodes whose placed points become clicks.

    A control point whose position becomes defined (``PointPositionDefinedEvent``: placed in a view or
    set from Python) calls ``on_point(point_world_ras (3,), is_positive)`` once, then is locked (= used).
    ``show`` redraws a segment's clicks without clicking. Not saved with the scene (the segment keeps the clicks).
    """

    def __init__(self, scene: Any, on_point: Callable[[np.ndarray, bool], None], name: str = "CTSAM3D") -> None:
        self.on_point = on_point
        self.positive_node = self._make_node(scene, f"{name} include", POSITIVE_COLOR)
        self.negative_node = self._make_node(scene, f"{name} exclude", NEGATIVE_COLOR)
        self._is_syncing = False
        self._observations = [(n, n.AddObserver(n.PointPositionDefinedEvent, self._on_defined))
                              for n in (self.positive_node, self.negative_node)]

    @staticmethod
    def _make_node(scene: Any, name: str, color: tuple[float, float, float]) -> Any:
        node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
        node.CreateDefaultDisplayNodes()
        node.SetSaveWithScene(False)
        node.SetMarkupLabelFormat("")
        display = node.GetDisplayNode()
        display.SetSaveWithScene(False)
        for set_color in (display.SetSelectedColor, display.SetColor, display.SetActiveColor):
            set_color(*color)
        return node

    def node(self, is_positive: bool) -> Any:
        """The fiducial node of that polarity."""
        return self.positive_node if is_positive else self.negative_node

    def _on_defined(self, caller: Any, _event: Any) -> None:
        if self._is_syncing:
            return
        is_positive = caller.GetID() == self.positive_node.GetID()
        new_points = []
        for n in range(caller.GetNumberOfControlPoints()):  # handled points are locked (IDs get reused)
            is_defined = caller.GetNthControlPointPositionStatus(n) == caller.PositionDefined
            if caller.GetNthControlPointLocked(n) or not is_defined:
                continue
            caller.SetNthControlPointLocked(n, True)
            world = np.zeros(3)
            caller.GetNthControlPointPositionWorld(n, world)
            new_points.append(world)
        for world in new_points:
            self.on_point(world, is_positive)

    def show(self, points_world: np.ndarray, labels: Sequence[bool]) -> None:
        """Replace the displayed points by these (world RAS (N, 3), polarities)."""
        self._is_syncing = True
        try:
            for is_positive in (True, False):
                node = self.node(is_positive)
                was_modifying = node.StartModify()
                node.RemoveAllControlPoints()
                for point, label in zip(np.asarray(points_world).reshape(-1, 3), labels):
                    if bool(label) == is_positive:
                        index = node.AddControlPointWorld([float(v) for v in point])
                        node.SetNthControlPointLocked(index, True)
                node.EndModify(was_modifying)
        finally:
            self._is_syncing = False

    def remove(self) -> None:
        """Stop observing and remove both nodes from the scene."""
        for node, tag in self._observations:
            node.RemoveObserver(tag)
            if node.GetScene() is not None:
                node.GetScene().RemoveNode(node)
        self._observations = []
