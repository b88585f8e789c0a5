"""CTSAM3D: click-prompted 3-D segmentation of CT (CT-SAM3D) in 3D Slicer.

The module is thin. The widget wires the UI; ``CTSAM3DLogic`` adds Slicer's base class to the
Qt-free ``CTSAM3DLib.mrml.logic.BridgeLogic`` (imported on first use, after PyTorch is there),
which converts MRML <-> engine, owns the session and writes only the changed box of a segment.
Inference runs on one worker thread; results are committed to the scene on the main thread.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

# The oldest Slicer CTSAM3D runs in: the first release whose Python (3.12) is >= 3.10, as CTSAM3DLib needs
# (Slicer 5.8 ships Python 3.9; 5.10 moved to 3.12). It has slicer.parameterNodeWrapper (Choice, WithinRange).
MINIMUM_SLICER = "5.10"

try:
    import qt
    import slicer
    import vtk
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )
    from slicer.util import VTKObservationMixin
except ImportError as _error:
    raise ImportError(
        "CTSAM3D.py is a 3D Slicer module and runs only inside 3D Slicer: it needs Slicer's Python (qt, "
        f"slicer.ScriptedLoadableModule, slicer.parameterNodeWrapper); here: {_error}. Outside Slicer use "
        "CTSAM3DLib (CLI and Python API) or CTSAM3DLib.mrml with the slicer-core wheel."
    ) from _error
try:
    if sys.version_info < (3, 10):
        raise ImportError(f"this Slicer's Python is {sys.version.split()[0]}; CTSAM3DLib needs 3.10 or newer")
    from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
    from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
except ImportError as _error:
    raise ImportError(f"CTSAM3D needs 3D Slicer {MINIMUM_SLICER} or newer ({_error}). Install a current Slicer "
                      "from download.slicer.org and the CTSAM3D extension for it.") from _error

from CTSAM3DSlicer.dependencies import ensure_dependencies, missing_runtime_packages
from CTSAM3DSlicer.editor_link import EditorLink
from CTSAM3DSlicer.sample_data import register_sample_data
# The poll timer: every POLL_INTERVAL_MS the widget waits up to POLL_WAIT_S for the worker in a wait that
# releases the GIL. Slicer's main thread holds the GIL while idle in Qt's event loop, so this wait is the
# time the worker gets to run (an 80 % share); events are still served at least every 40 ms.
POLL_INTERVAL_MS, POLL_WAIT_S = 10, 0.04
# Public names of CTSAM3DLib.mrml.logic.BridgeLogic that CTSAM3DLogic exposes (the scripting API).
DELEGATED_TO_BRIDGE = frozenset({"segment", "session", "load_model", "set_predictor", "configure", "available_devices",
                                 "worker", "cancel", "close_session", "predictor", "config", "overwrite",
                                 "use_labelmap_source"})


class CTSAM3D(ScriptedLoadableModule):
    """Module description shown by Slicer."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CTSAM3D"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["CTSAM3D contributors"]
        self.parent.helpText = (
            "Click-prompted 3-D segmentation of anatomy in CT (CT-SAM3D). Choose a CT, a segmentation and a "
            "segment, press Start, then place include (green) and exclude (red) points in any view: every point "
            "updates the segment; a segment drawn or edited by hand is refined, never erased. T toggles include/exclude, "
            "Ctrl+Z / Ctrl+Y undo / redo, N starts the next segment, Shift+R resets it, H hides/shows it, Shift+Del "
            "deletes it. Clicks are stored with each segment and survive saving the scene. "
            "The bundled weights are a small demo model, briefly trained on about 140 patients: for real work "
            "import the authors' checkpoint (params.pth) or one you trained (Settings > Import checkpoint). "
            "See docs/slicer.md of the CTSAM3D repository."
        )
        self.parent.acknowledgementText = (
            "CT-SAM3D: Guo et al., 'Towards a Comprehensive, Efficient and Promptable Anatomic Structure "
            "Segmentation Model using 3D Whole-body CT Scans'. Sample CT from the TotalSegmentator test data "
            "(Wasserthal et al., Radiology: AI 2023, Apache-2.0)."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """Offer the bundled abdomen CT in the Sample Data module (a local file: no download)."""
    register_sample_data(Path(__file__).parent / "Resources" / "Icons" / "CTSAM3D.png")


@parameterNodeWrapper
class CTSAM3DParameterNode:
    """Module state saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    segmentId: str = ""
    useCpp: bool = True
    maxPatches: Annotated[int, WithinRange(1, 125)] = 27
    largeOrgans: bool = False  # CPP clicks neighbours deep inside thick organs (SessionConfig.cpp_reach_depth)
    overwrite: Annotated[str, Choice(["none", "visible", "all"])] = "none"
    device: Annotated[str, Choice(["cuda", "cpu"])] = "cuda"
    checkpointPath: str = ""  # empty: the bundled demo weights
    overrideWindow: bool = False  # False: the window the checkpoint (or its config.py) records
    windowMinHu: Annotated[float, WithinRange(-4000.0, 4000.0)] = -1000.0
    windowMaxHu: Annotated[float, WithinRange(-4000.0, 4000.0)] = 1000.0


class CTSAM3DWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The GUI: wiring only; every action is one logic call inside ``tryWithErrorDisplay``."""

    def __init__(self, parent: Any = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: CTSAM3DLogic | None = None
        self._parameterNode: CTSAM3DParameterNode | None = None
        self._parameterNodeGuiTag = None
        self._prompts = None  # CTSAM3DLib.mrml.markups.PromptMarkups once started
        self._editor: EditorLink | None = None  # the embedded Segment Editor
        self._isPositive = True
        self._dependenciesChecked = False
        self._shortcuts: list[Any] = []
        self._isShowingError = False
        self._timer = qt.QTimer()

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CTSAM3D.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CTSAM3DLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        actions = {"startButton": self.onStart, "undoButton": lambda: self._submitKind("undo"),
                   "redoButton": lambda: self._submitKind("redo"), "resetButton": lambda: self._submitKind("reset"),
                   "nextSegmentButton": self.onNextSegment, "cancelButton": self.onCancel,
                   "importCheckpointButton": self.onImportCheckpoint,
                   "defaultCheckpointButton": self.onDefaultCheckpoint,
                   "positiveButton": lambda: self.setPlaceMode(True),
                   "negativeButton": lambda: self.setPlaceMode(False)}
        for name, handler in actions.items():
            getattr(self.ui, name).connect("clicked(bool)", lambda _checked, handler=handler: handler())
        self.ui.segmentSelector.connect("currentSegmentChanged(QString)", self.onSegmentChanged)
        self._editor = EditorLink(self.ui.segmentEditorWidget, self._onEditorSegmentSelected, self._onEditorOverwrite)
        self._editor.attach(slicer.mrmlScene)
        appLogic = slicer.app.applicationLogic()
        for node in (appLogic.GetInteractionNode(), appLogic.GetSelectionNode()):  # keep +/- buttons in sync
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self._onPlaceModeModified)
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPoll)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()
        self._editor.detach()
        self._timer.stop()
        self._removeShortcuts()
        if self._prompts is not None:  # observers and prompt nodes go with the widget (module reload)
            self._prompts.remove()
            self._prompts = None
        if self.logic is not None:
            self.logic.close()

    def enter(self) -> None:
        self.initializeParameterNode()
        self._editor.start()
        keys = {"Ctrl+Z": lambda: self._submitKind("undo"), "Ctrl+Y": lambda: self._submitKind("redo"),
                "T": self.onToggle, "N": self.onNextSegment, "Shift+R": lambda: self._submitKind("reset"),
                "H": self.onToggleVisibility, "Shift+Del": self.onDeleteSegment}
        for key, handler in keys.items() if slicer.util.mainWindow() else ():
            shortcut = qt.QShortcut(qt.QKeySequence(key), slicer.util.mainWindow())
            shortcut.connect("activated()", handler)
            self._shortcuts.append(shortcut)

    def exit(self) -> None:
        self._removeShortcuts()
        self._stopPlacing()  # a click in another module places no CTSAM3D point
        self._disconnectParameterNode()

    def _stopPlacing(self) -> None:
        """Placement of CTSAM3D points off, no active editor effect, the editor's view observations removed."""
        self._editor.stop()
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        ours = self._prompts is not None and slicer.modules.markups.logic().GetActiveListID() in (
            self._prompts.node(True).GetID(), self._prompts.node(False).GetID())
        if ours and interaction.GetCurrentInteractionMode() == interaction.Place:
            interaction.SwitchToViewTransformMode()

    def _removeShortcuts(self) -> None:
        for shortcut in self._shortcuts:
            shortcut.setParent(None)
        self._shortcuts = []

    def onSceneStartClose(self, caller: Any, event: Any) -> None:
        self.setParameterNode(None)
        self._stopPlacing()
        if self._prompts is not None:  # its observers, and its nodes before the scene goes
            self._prompts.remove()
            self._prompts = None
        self._editor.detach()
        if self.logic is not None:
            self.logic.close()

    def onSceneEndClose(self, caller: Any, event: Any) -> None:
        self._editor.attach(slicer.mrmlScene)  # its node went with the scene
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        from CTSAM3DLib.mrml.geometry import default_input_volume  # numpy only: no PyTorch needed

        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = default_input_volume(slicer.mrmlScene)  # a CT, not a labelmap

    def _disconnectParameterNode(self) -> None:
        if self._parameterNode and self._parameterNodeGuiTag:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def setParameterNode(self, inputParameterNode: CTSAM3DParameterNode | None) -> None:
        self._disconnectParameterNode()
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller: Any = None, event: Any = None) -> None:
        params = self._parameterNode
        if params is None:
            return
        if self.ui.segmentSelector.currentNode() is not params.segmentation:
            self.ui.segmentSelector.setCurrentNode(params.segmentation)
        self._editor.show(params.segmentation, params.inputVolume, params.overwrite)
        self.ui.startButton.enabled = bool(params.inputVolume and params.segmentation)
        self.ui.deviceWarningLabel.visible = params.device == "cpu"
        self.ui.overrideWindowCheckBox.enabled = bool(params.checkpointPath)
        override = bool(params.checkpointPath) and params.overrideWindow
        self.ui.windowMinSpinBox.enabled = self.ui.windowMaxSpinBox.enabled = override

    # ---- actions --------------------------------------------------------------------------
    def onStart(self) -> None:
        with slicer.util.tryWithErrorDisplay("CTSAM3D could not start.", waitCursor=True):
            session = self._session()
            if not self._parameterNode.segmentId:
                self._parameterNode.segmentId = session.add_segment()
                self.ui.segmentSelector.setCurrentSegmentID(self._parameterNode.segmentId)
            if self._prompts is None:
                from CTSAM3DLib.mrml.markups import PromptMarkups

                self._prompts = PromptMarkups(slicer.mrmlScene, self.onPoint)
            self._showClicks()
            self.setPlaceMode(True)

    def onPoint(self, pointWorld: Any, isPositive: bool) -> None:
        with slicer.util.tryWithErrorDisplay("CTSAM3D could not use this point."):
            session = self._session()
            self._submit(session, session.prepare_click(pointWorld, isPositive, self._segmentId()))

    def onNextSegment(self) -> None:
        if not self._isStarted():
            return
        with slicer.util.tryWithErrorDisplay("CTSAM3D could not add a segment."):
            segmentId = self._session().add_segment()
            self.ui.segmentSelector.setCurrentSegmentID(segmentId)
            self.setPlaceMode(True)  # a new segment starts with an include point

    def _onEditorSegmentSelected(self, segmentId: str) -> None:
        if self._parameterNode is not None and segmentId != self._parameterNode.segmentId:
            self.ui.segmentSelector.setCurrentSegmentID(segmentId)  # -> onSegmentChanged

    def _onEditorOverwrite(self, overwrite: str) -> None:
        if self._parameterNode is not None and overwrite != self._parameterNode.overwrite:
            self._parameterNode.overwrite = overwrite  # the editor's overwrite setting is the module's

    def onSegmentChanged(self, segmentId: str) -> None:
        if self._parameterNode is None or self._parameterNode.segmentId == segmentId:
            return
        self._parameterNode.segmentId = segmentId
        self.ui.segmentEditorWidget.setCurrentSegmentID(segmentId)
        if self._prompts is not None and segmentId:
            with slicer.util.tryWithErrorDisplay("CTSAM3D could not show this segment's clicks."):
                self._showClicks()  # its stored clicks, shown; the model replays them at its next click

    def onToggle(self) -> None:
        self.setPlaceMode(not self._isPositive)

    def onToggleVisibility(self) -> None:
        params = self._parameterNode
        display = params.segmentation.GetDisplayNode() if params and params.segmentation else None
        if display is not None and params.segmentId:
            display.SetSegmentVisibility(params.segmentId, not display.GetSegmentVisibility(params.segmentId))

    def onDeleteSegment(self) -> None:
        params = self._parameterNode
        if not (self._isStarted() and params.segmentation and params.segmentId) or self.logic.worker.busy:
            return
        name = params.segmentation.GetSegmentation().GetSegment(params.segmentId).GetName()
        if slicer.util.confirmYesNoDisplay(f"Delete segment '{name}' and its clicks?", windowTitle="CTSAM3D"):
            self._prompts.show([], [])
            self.logic.session(params.inputVolume, params.segmentation).delete_segment(params.segmentId)

    def setPlaceMode(self, isPositive: bool) -> None:
        self._isPositive = isPositive
        self.ui.positiveButton.checked, self.ui.negativeButton.checked = isPositive, not isPositive
        if self._prompts is None:
            return
        self.ui.segmentEditorWidget.setActiveEffect(None)  # a click places a point, not a paint stroke
        markupsLogic = slicer.modules.markups.logic()
        markupsLogic.SetActiveList(self._prompts.node(isPositive))
        markupsLogic.StartPlaceMode(True)

    def _onPlaceModeModified(self, caller: Any = None, event: Any = None) -> None:
        """Check the Include / Exclude button only while a point of that polarity is being placed."""
        if self._prompts is None:
            return
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        placing = interaction.GetCurrentInteractionMode() == interaction.Place
        activeId = slicer.modules.markups.logic().GetActiveListID()
        for isPositive, button in ((True, self.ui.positiveButton), (False, self.ui.negativeButton)):
            button.checked = placing and activeId == self._prompts.node(isPositive).GetID()

    def onCancel(self) -> None:
        self.logic.cancel()
        self.ui.statusLabel.text = "Cancelling..."

    def onImportCheckpoint(self) -> None:
        path = qt.QFileDialog.getOpenFileName(self.parent, "Import a checkpoint (the authors' params.pth or your own)",
                                              "", "Checkpoints (*.pth *.pt *.ckpt);;All files (*)")
        if path:
            self._parameterNode.checkpointPath = path

    def onDefaultCheckpoint(self) -> None:
        self._parameterNode.checkpointPath = ""

    # ---- worker ---------------------------------------------------------------------------
    def _submitKind(self, kind: str) -> None:
        if not self._isStarted():
            return
        with slicer.util.tryWithErrorDisplay(f"CTSAM3D could not {kind}."):
            session = self._session()
            self._submit(session, session.prepare(kind, self._segmentId()))

    def _submit(self, session: Any, job: Any) -> None:
        self.logic.worker.submit(session, job)
        self.ui.cancelButton.enabled = True
        self.ui.statusLabel.text = "Segmenting..."
        self._timer.start()

    def onPoll(self) -> None:
        if self._isShowingError:  # the timer fires inside the error dialog's event loop: wait for it to close
            return
        errors = []
        for result in self.logic.worker.poll(wait_s=POLL_WAIT_S):  # the wait lets the worker run (GIL)
            if result.error is not None:
                errors.append(result.error)
            else:
                self.ui.statusLabel.text = result.outcome.describe(getattr(self.logic.predictor, "device", "?"))
            if self._prompts and self._parameterNode and result.job.segment_id == self._parameterNode.segmentId:
                self._prompts.show(*result.clicks_world())
        if (progress := self.logic.worker.progress) is not None:
            self.ui.statusLabel.text = f"Segmenting: {progress.describe()}"
        if not self.logic.worker.busy:
            self._timer.stop()
            self.ui.cancelButton.enabled = False
        if errors:
            self._showErrors(errors)

    def _showErrors(self, errors: list[BaseException]) -> None:
        """One status line and at most one dialog for all jobs that failed in one poll."""
        from CTSAM3DLib.mrml.jobs import ClickCancelled

        messages = list(dict.fromkeys(str(e) for e in errors if not isinstance(e, ClickCancelled)))
        self.ui.statusLabel.text = f"Error: {messages[-1]}" if messages else "Cancelled: the segment is unchanged."
        if messages:
            self._isShowingError = True
            try:
                slicer.util.errorDisplay("\n\n".join(messages), windowTitle="CTSAM3D")
            finally:
                self._isShowingError = False

    # ---- helpers ----------------------------------------------------------------------------
    def _segmentId(self) -> str:
        segmentId = self._parameterNode.segmentId
        if not segmentId:
            raise ValueError("Select a segment (or press Next segment) first.")
        return segmentId

    def _isStarted(self) -> bool:
        """Whether Start was pressed (shortcuts and buttons before it only say so: no install dialog, no error)."""
        if self._prompts is None or self._parameterNode is None:
            self.ui.statusLabel.text = "Press Start segmenting first."
            return False
        return True

    def _session(self) -> Any:
        """The logic's session for the selected nodes, with the model, settings and editor masking of the GUI."""
        self._ensureDependencies()
        from CTSAM3DLib.mrml.editor import SourceRepresentationError

        params = self._parameterNode
        try:
            return self.logic.sessionFor(params, self._editor.settings(), self._editor.save_state)
        except SourceRepresentationError as error:
            if not slicer.util.confirmYesNoDisplay(f"{error}\n\nConvert it to a binary labelmap now?",
                                                   windowTitle="CTSAM3D"):
                raise
            self.logic.use_labelmap_source(params.segmentation)
            return self.logic.sessionFor(params, self._editor.settings(), self._editor.save_state)

    def _showClicks(self) -> None:
        """Show the selected segment's clicks (stored ones read from the segment: the model does not run)."""
        self._prompts.show(*self._session().clicks_world(self._segmentId()))

    def _ensureDependencies(self) -> None:
        if not self._dependenciesChecked:
            ensure_dependencies(self.resourcePath("requirements.txt"))
            if self._parameterNode.device not in self.logic.available_devices():
                self._parameterNode.device = "cpu"  # no usable CUDA: shows the CPU warning
            self._dependenciesChecked = True


class CTSAM3DLogic(ScriptedLoadableModuleLogic):
    """Slicer's face of ``CTSAM3DLib.mrml.logic.BridgeLogic`` (Qt-free), created on first use.

    Scripting API (Python console), all delegated to ``BridgeLogic``::

        logic = slicer.util.getModuleLogic("CTSAM3D")
        segmentId = logic.segment(volumeNode, segmentationNode, None, pointsRAS, labels)  # labels: 1 / 0
        session = logic.session(volumeNode, segmentationNode)  # click / undo / redo / reset / restore
        logic.load_model(path=None, device="cuda"); logic.configure(use_cpp=True, max_patches=27)
    """

    def __init__(self) -> None:
        self._core = None
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self) -> CTSAM3DParameterNode:
        return CTSAM3DParameterNode(super().getParameterNode())

    def sessionFor(self, params: CTSAM3DParameterNode, editMask: Any, beforeWrite: Any) -> Any:
        """The session for the parameter node's nodes, with its model and settings, the Segment Editor's masking
        (``editMask``) and ``beforeWrite()`` called before each write (the editor's undo state).

        Raises:
            SourceRepresentationError: the segmentation is not stored as a binary labelmap (ask, then
                ``use_labelmap_source``).
        """
        from CTSAM3DLib.engine.planning import reach_depth_for
        from CTSAM3DLib.model.checkpoint import CheckpointError

        path = params.checkpointPath or None
        window = (params.windowMinHu, params.windowMaxHu) if path and params.overrideWindow else None
        try:
            self.load_model(path, params.device, window)  # None: the window the checkpoint records
        except CheckpointError as error:
            if window is None and "window" in str(error):
                raise CheckpointError(f"{error} In CTSAM3D: Settings > 'Override its window', then the two "
                                      "values (HU).") from error
            raise
        self.configure(use_cpp=params.useCpp, max_patches=params.maxPatches, overwrite=params.overwrite,
                       cpp_reach_depth=reach_depth_for(params.largeOrgans), edit_mask=editMask)
        self.core.before_write = lambda _segmentId: beforeWrite()
        return self.session(params.inputVolume, params.segmentation)

    @property
    def core(self) -> Any:
        """The ``BridgeLogic`` (imports CTSAM3DLib and PyTorch on first use)."""
        if self._core is None:
            from CTSAM3DLib.mrml.logic import BridgeLogic

            self._core = BridgeLogic()
        return self._core

    def __getattr__(self, name: str) -> Any:
        if name not in DELEGATED_TO_BRIDGE:  # never import torch for Slicer's own hasattr() probes
            raise AttributeError(name)
        return getattr(self.core, name)

    def close(self) -> None:
        if self._core is not None:
            self._core.close()


class CTSAM3DTest(ScriptedLoadableModuleTest):
    """Self-test in real Slicer (``Slicer --no-main-window --testing ...``, or ctest): the logic on a synthetic
    oblique, parent-transformed volume, and the bundled sample CT against the stored reference masks."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        missing = missing_runtime_packages()
        if missing:  # a clean Slicer or an extension build machine: say what is missing, do not error
            message = (f"CTSAM3D self-test skipped: {', '.join(missing)} not installed (press Start in the module "
                       "to install them).")
            logging.warning(message)
            self.delayDisplay(message)
            return
        self.setUp()
        self.test_markups_click_lands_on_voxel()
        self.setUp()
        self.test_reference_masks()

    def test_markups_click_lands_on_voxel(self) -> None:
        import numpy as np
        import torch

        from CTSAM3DLib import Predictor, build_model
        from CTSAM3DLib.mrml.geometry import local_to_world
        from CTSAM3DLib.mrml.markups import PromptMarkups

        ijkToRas = np.array([[0.0, -0.9, 0.0, 20.0], [1.1, 0.0, 0.0, -10.0], [0.0, 0.0, -2.0, 35.0], [0, 0, 0, 1]])
        array = np.random.default_rng(0).normal(0, 50, (30, 40, 50)).astype(np.int16)
        volume = slicer.util.addVolumeFromArray(array, ijkToRas, name="Synthetic CT")
        transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
        transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(
            np.array([[0, -1, 0, 5.0], [1, 0, 0, -3.0], [0, 0, 1, 12.0], [0, 0, 0, 1]])))
        volume.SetAndObserveTransformNodeID(transform.GetID())
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        torch.manual_seed(0)
        logic = CTSAM3DLogic()
        logic.set_predictor(Predictor(build_model("compact"), "compact", (-1000.0, 1000.0)))
        logic.configure(use_cpp=False)
        session = logic.session(volume, segmentation)
        segmentId = session.add_segment()
        prompts = PromptMarkups(slicer.mrmlScene, lambda p, positive: session.click(p, positive, segmentId))
        target = (25, 20, 14)
        pointWorld = local_to_world(volume, (ijkToRas @ np.array([*target, 1.0]))[:3])[0]
        prompts.positive_node.AddControlPointWorld(pointWorld.tolist())
        np.testing.assert_allclose(session.engine.clicks(segmentId)[0].point_xyz, target, atol=1e-6)
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 1)
        logic.close()
        self.delayDisplay("Markups click landed on its voxel")

    def test_reference_masks(self) -> None:
        """Replays Resources/sample/reference/clicks.json on the sample CT; Dice >= 0.99 per structure."""
        from CTSAM3DLib import bundled

        referenceDir = bundled.resources_dir() / "sample" / "reference"
        specPath = referenceDir / "clicks.json"
        self.assertTrue(specPath.is_file(), f"{specPath} is missing: run scripts/slicer/make_reference_masks.py")
        spec = json.loads(specPath.read_text())
        volume = slicer.util.loadVolume(str(bundled.sample_dir() / "ct.nii.gz"))
        reference = slicer.util.loadSegmentation(str(referenceDir / spec["segmentation"]))
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "CTSAM3D")
        logic = CTSAM3DLogic()
        logic.load_model(None, spec.get("device", "cpu"))
        logic.configure(use_cpp=spec["use_cpp"], max_patches=spec["max_patches"])
        for structure in spec["structures"]:
            segmentId = logic.segment(volume, segmentation, None, structure["points_ras"], structure["labels"])
            ours = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume) > 0
            referenceId = reference.GetSegmentation().GetSegmentIdBySegmentName(structure["name"])
            theirs = slicer.util.arrayFromSegmentBinaryLabelmap(reference, referenceId, volume) > 0
            dice = 2.0 * (ours & theirs).sum() / max(1, ours.sum() + theirs.sum())
            logging.info(f"CTSAM3D reference {structure['name']}: Dice {dice:.4f}")
            self.assertGreaterEqual(dice, 0.99, f"{structure['name']}: Dice {dice:.4f} < 0.99")
        logic.close()
        self.delayDisplay("Reference masks reproduced")
