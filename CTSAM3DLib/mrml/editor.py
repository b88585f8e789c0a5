"""What the Segment Editor decides about a write: masking (editable area, intensity range), overwrite, source.

A CTSAM3D result is written as a Segment Editor effect would write it: only where the editor's masking
allows (``EditMask``: the editable area of ``vtkMRMLSegmentationNode.GenerateEditMask`` and the source
volume's intensity range), with the editor's overwrite mode, into a binary-labelmap source
representation (a closed-surface or contour source would re-convert and drop what was written).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from CTSAM3DLib.aliases import BBox3D
from CTSAM3DLib.mrml.geometry import crop, image_array, oriented_image, slicer_api
from CTSAM3DLib.mrml.segments import OverwriteMode

# vtkMRMLSegmentEditorNode overwrite constants (OverwriteAllSegments, OverwriteVisibleSegments, OverwriteNone).
_OVERWRITE_BY_EDITOR = {0: "all", 1: "visible", 2: "none"}


class SourceRepresentationError(ValueError):
    """The segmentation's source representation is not a binary labelmap (e.g. closed surface, planar contours)."""


@dataclass(frozen=True)
class EditMask:
    """The Segment Editor's masking settings (``vtkMRMLSegmentEditorNode``), applied to every CTSAM3D write.

    ``mode``: a ``vtkMRMLSegmentationNode.EditAllowed*`` constant (0 = everywhere); ``mask_segment_id``: the
    segment of ``EditAllowedInsideSingleSegment``; ``intensity_range``: (min, max) of the input volume's
    values where writing is allowed, or None.
    """

    mode: int = 0
    mask_segment_id: str = ""
    intensity_range: tuple[float, float] | None = None

    @property
    def is_everywhere(self) -> bool:
        """Whether this mask allows every voxel."""
        return self.mode == 0 and self.intensity_range is None


def editor_settings(editor_node: Any) -> tuple[EditMask, OverwriteMode]:
    """The masking and the overwrite mode set in a ``vtkMRMLSegmentEditorNode``."""
    intensity = None
    if editor_node.GetSourceVolumeIntensityMask():
        low, high = editor_node.GetSourceVolumeIntensityMaskRange()
        intensity = (float(low), float(high))
    mask = EditMask(int(editor_node.GetMaskMode()), editor_node.GetMaskSegmentID() or "", intensity)
    return mask, _OVERWRITE_BY_EDITOR.get(int(editor_node.GetOverwriteMode()), "none")  # type: ignore[return-value]


def editable(segmentation_node: Any, segment_id: str, geometry: np.ndarray, box: BBox3D, mask: EditMask,
             volume_node: Any) -> np.ndarray | None:
    """Where writing into the segment is allowed inside ``box`` (bool, z, y, x; voxels of ``geometry``, the
    volume grid in the segmentation's frame), or None when it is allowed everywhere.

    Raises:
        RuntimeError: Slicer could not compute the editable area (e.g. the mask segment is gone).
    """
    if mask.is_everywhere:
        return None
    (i0, j0, k0), (i1, j1, k1) = box
    allowed = np.ones((k1 - k0, j1 - j0, i1 - i0), dtype=bool)
    if mask.mode != 0:
        reference = oriented_image(geometry, (i0, i1 - 1, j0, j1 - 1, k0, k1 - 1))
        denied = slicer_api().vtkOrientedImageData()
        if not segmentation_node.GenerateEditMask(denied, mask.mode, reference, segment_id, mask.mask_segment_id):
            raise RuntimeError("Slicer could not compute the Segment Editor's editable area: check its masking "
                               "settings (the mask segment may have been deleted).")
        allowed &= image_array(denied) == 0  # nonzero = not editable
    if mask.intensity_range is not None:
        values = crop(np.asarray(slicer_api().util.arrayFromVolume(volume_node)), box)
        allowed &= (values >= mask.intensity_range[0]) & (values <= mask.intensity_range[1])
    return allowed


def source_problem(segmentation_node: Any) -> str | None:
    """Why CTSAM3D cannot write into this segmentation as it is, or None when its source is a binary labelmap."""
    segmentation = segmentation_node.GetSegmentation()
    binary = slicer_api().vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    source = segmentation.GetSourceRepresentationName()
    if source == binary:
        return None
    return (f"Segmentation '{segmentation_node.GetName()}' stores its segments as '{source}', not as a binary "
            "labelmap: a result written now would be lost at the next conversion. Convert its source "
            "representation to a binary labelmap (as the Segment Editor does before editing), or choose "
            "another segmentation.")


def use_labelmap_source(segmentation_node: Any) -> None:
    """Make the binary labelmap the source representation (converted from the current source, on the
    segmentation's reference geometry), as the Segment Editor does before its first edit.

    Raises:
        RuntimeError: Slicer could not convert the segments.
    """
    segmentation = segmentation_node.GetSegmentation()
    binary = slicer_api().vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    if segmentation.GetSourceRepresentationName() == binary:
        return
    if segmentation.GetNumberOfSegments() and not segmentation.CreateRepresentation(binary):
        raise RuntimeError(f"Slicer could not convert the segments of '{segmentation_node.GetName()}' to a binary "
                           "labelmap.")
    segmentation.SetSourceRepresentationName(binary)
