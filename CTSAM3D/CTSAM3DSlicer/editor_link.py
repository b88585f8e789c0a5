"""The module's embedded Segment Editor: its own parameter node, kept in step with the CTSAM3D module.

The editor's overwrite setting and the module's are one (either side changes both); its masking settings and
its undo apply to CTSAM3D's writes (``save_state`` before each one). Entering and leaving the module turns its
view observations on and off, as the Segment Editor module does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import slicer
import vtk

if TYPE_CHECKING:
    from CTSAM3DLib.mrml.editor import EditMask

# The module's overwrite choices as vtkMRMLSegmentEditorNode constants.
EDITOR_OVERWRITE = {"all": slicer.vtkMRMLSegmentEditorNode.OverwriteAllSegments,
                    "visible": slicer.vtkMRMLSegmentEditorNode.OverwriteVisibleSegments,
                    "none": slicer.vtkMRMLSegmentEditorNode.OverwriteNone}
SINGLETON_TAG = "CTSAM3D"


class EditorLink:
    """A ``qMRMLSegmentEditorWidget`` on a segment editor node of its own; reports the segment selected and the
    overwrite mode chosen in it."""

    def __init__(self, editor_widget: Any, on_segment_selected: Callable[[str], None],
                 on_overwrite: Callable[[str], None]) -> None:
        self.widget = editor_widget
        self.node: Any = None
        self._tag: int | None = None
        self._on_segment_selected, self._on_overwrite = on_segment_selected, on_overwrite

    def attach(self, scene: Any) -> None:
        """Use the scene's CTSAM3D segment editor node (created if missing: at setup and after a scene close)."""
        self.detach()
        self.widget.setMRMLScene(scene)
        node = scene.GetSingletonNode(SINGLETON_TAG, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.vtkMRMLSegmentEditorNode()
            node.SetSingletonTag(SINGLETON_TAG)
            node = scene.AddNode(node)
        self.widget.setMRMLSegmentEditorNode(node)
        self.widget.setSegmentationNodeSelectorVisible(False)
        self.widget.setSourceVolumeNodeSelectorVisible(False)
        self.node, self._tag = node, node.AddObserver(vtk.vtkCommand.ModifiedEvent, self._on_modified)

    def detach(self) -> None:
        """Stop observing the editor node (scene close, module cleanup)."""
        if self.node is not None and self._tag is not None:
            self.node.RemoveObserver(self._tag)
        self.node, self._tag = None, None

    def show(self, segmentation_node: Any, volume_node: Any, overwrite: str) -> None:
        """Edit this segmentation over this volume, with the module's overwrite mode."""
        self.widget.setSegmentationNode(segmentation_node)
        self.widget.setSourceVolumeNode(volume_node)
        if self.node is not None and self.node.GetOverwriteMode() != EDITOR_OVERWRITE[overwrite]:
            self.node.SetOverwriteMode(EDITOR_OVERWRITE[overwrite])

    def settings(self) -> EditMask:
        """The editor's masking for CTSAM3D's writes (imports CTSAM3DLib: call once PyTorch is installed)."""
        from CTSAM3DLib.mrml.editor import EditMask, editor_settings

        return EditMask() if self.node is None else editor_settings(self.node)[0]

    def save_state(self) -> None:
        """Save the segmentation for the editor's Undo (before each CTSAM3D write)."""
        self.widget.saveStateForUndo()

    def start(self) -> None:
        """Entering the module: the editor's effects see the views again."""
        self.widget.setupViewObservations()

    def stop(self) -> None:
        """Leaving the module (or closing the scene): no active effect, no view observations."""
        self.widget.setActiveEffect(None)
        self.widget.removeViewObservations()

    def _on_modified(self, caller: Any, _event: Any) -> None:
        segment_id = caller.GetSelectedSegmentID()
        if segment_id:
            self._on_segment_selected(segment_id)
        overwrite = {code: name for name, code in EDITOR_OVERWRITE.items()}.get(caller.GetOverwriteMode())
        if overwrite:
            self._on_overwrite(overwrite)
