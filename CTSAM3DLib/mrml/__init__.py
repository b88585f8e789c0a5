"""Qt-free bridge between 3D Slicer's MRML scene and the CTSAM3D engine (the core of ``CTSAM3DLogic``).

One concern a module: ``geometry`` (MRML <-> numpy, frames, labelmap grids), ``segments`` (segment
writes, overwrite modes, display, clicks stored with the segment), ``jobs`` (Job, Outcome,
cancellation), ``session`` (``SegmentationSession``), ``worker`` (``ClickWorker``), ``markups``
(``PromptMarkups``) and ``logic`` (``BridgeLogic``). Import from the modules themselves. The MRML
calls used behave the same in Slicer and in the ``slicer-core`` wheel; ``slicer``/``vtk`` are
imported lazily and Qt never.
"""
