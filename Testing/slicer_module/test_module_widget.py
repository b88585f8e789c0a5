"""The module's widget-side code on slicer-core, with stand-ins for the Qt widgets that record what Slicer API
they are asked for (checked against the names of Slicer's own classes): Sample Data registration, the embedded
Segment Editor's link, leaving the module, shortcuts before Start, scene close, the checkpoint window."""

from __future__ import annotations

import hashlib
import types
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from mrml_test_support import import_module_with_stand_ins, make_segmentation_node, world_of_voxel

REPO = Path(__file__).resolve().parents[2]
# Parameters of SampleData.SampleDataLogic.registerCustomSampleDataSource (Slicer 5.10+, Modules/Scripted/SampleData).
SAMPLE_DATA_PARAMETERS = {"category", "sampleName", "uris", "fileNames", "nodeNames", "customDownloader",
                          "thumbnailFileName", "loadFileTypes", "loadFiles", "loadFileProperties", "checksums",
                          "loadFileType"}
# Python-callable slots and Q_INVOKABLE methods of qMRMLSegmentEditorWidget that the module uses
# (qMRMLSegmentEditorWidget.h).
EDITOR_WIDGET_API = {"setMRMLScene", "setMRMLSegmentEditorNode", "setSegmentationNodeSelectorVisible",
                     "setSourceVolumeNodeSelectorVisible", "setSegmentationNode", "setSourceVolumeNode",
                     "setCurrentSegmentID", "saveStateForUndo", "setupViewObservations", "removeViewObservations",
                     "setActiveEffect"}


class Recorder:
    """A Qt widget stand-in: any method call is recorded (name, args); attributes can be set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, args))

    def names(self) -> set[str]:
        return {name for name, _ in self.calls}


@pytest.fixture
def module(scene, monkeypatch):
    import slicer

    loaded = import_module_with_stand_ins(monkeypatch)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(applicationLogic=lambda: slicer.modules.application_logic),
                        raising=False)
    return loaded


def _widget(module, monkeypatch):
    """A CTSAM3DWidget without Qt: recorders for its .ui widgets, the real logic and editor link."""
    import slicer
    from CTSAM3DSlicer.editor_link import EditorLink

    widget = object.__new__(module.CTSAM3DWidget)
    ui = types.SimpleNamespace(segmentEditorWidget=Recorder(), statusLabel=types.SimpleNamespace(text=""),
                               segmentSelector=Recorder(), positiveButton=types.SimpleNamespace(checked=False),
                               negativeButton=types.SimpleNamespace(checked=False))
    widget.ui, widget.logic, widget._prompts, widget._parameterNode = ui, module.CTSAM3DLogic(), None, None
    widget._isPositive, widget._shortcuts, widget._dependenciesChecked = True, [], True
    widget._editor = EditorLink(ui.segmentEditorWidget, lambda _sid: None, lambda _mode: None)
    widget._editor.attach(slicer.mrmlScene)
    monkeypatch.setattr(module, "ensure_dependencies", lambda path: pytest.fail("installing before Start"))
    return widget


def test_sample_data_is_registered_with_a_local_uri_names_and_checksum(module, monkeypatch, tmp_path):
    registered = []
    sample_data = types.SimpleNamespace(SampleDataLogic=types.SimpleNamespace(
        registerCustomSampleDataSource=lambda **kwargs: registered.append(kwargs)))
    monkeypatch.setitem(__import__("sys").modules, "SampleData", sample_data)
    module.registerSampleData()
    (kwargs,) = registered
    assert set(kwargs) <= SAMPLE_DATA_PARAMETERS and "customDownloader" not in kwargs
    assert kwargs["sampleName"] == "CTSAM3DSample"  # SampleData.downloadSample("CTSAM3DSample")
    assert len(kwargs["uris"]) == len(kwargs["fileNames"]) == len(kwargs["nodeNames"]) == len(kwargs["checksums"]) == 1
    assert kwargs["uris"][0].startswith("file://") and Path(kwargs["thumbnailFileName"]).is_file()
    copy = tmp_path / kwargs["fileNames"][0]
    urllib.request.urlretrieve(kwargs["uris"][0], copy)  # what Sample Data does with the URI
    algorithm, digest = kwargs["checksums"][0].split(":")
    assert algorithm == "SHA256" and hashlib.sha256(copy.read_bytes()).hexdigest() == digest


def test_editor_link_keeps_overwrite_in_step_and_calls_only_slicer_api(module, scene, ct_volume):
    import slicer

    from CTSAM3DSlicer.editor_link import EditorLink

    selected, overwrites = [], []
    editor = Recorder()
    link = EditorLink(editor, selected.append, overwrites.append)
    link.attach(scene)
    segmentation = make_segmentation_node(scene)
    link.show(segmentation, ct_volume, "visible")
    assert link.node.GetOverwriteMode() == slicer.vtkMRMLSegmentEditorNode.OverwriteVisibleSegments
    link.node.SetOverwriteMode(slicer.vtkMRMLSegmentEditorNode.OverwriteAllSegments)  # changed in the editor
    link.node.SetSelectedSegmentID("S1")
    assert overwrites[-1] == "all" and selected[-1] == "S1"
    link.node.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedOutsideAllSegments)
    assert link.settings().mode == slicer.vtkMRMLSegmentationNode.EditAllowedOutsideAllSegments
    link.save_state(), link.start(), link.stop()
    assert editor.names() <= EDITOR_WIDGET_API, sorted(editor.names() - EDITOR_WIDGET_API)
    link.detach()
    link.node = None


@pytest.fixture
def ct_volume(scene):
    from mrml_test_support import affine, make_volume_node, synthetic_ct

    return make_volume_node(scene, synthetic_ct((40, 48, 56)), affine(np.diag([1.0, 1.0, 2.0]), (-20.0, 15.0, 40.0)))


def test_leaving_the_module_turns_point_placement_and_editor_observations_off(module, monkeypatch, scene):
    import slicer

    from CTSAM3DLib.mrml.markups import PromptMarkups

    widget = _widget(module, monkeypatch)
    widget._prompts = PromptMarkups(scene, lambda *a: None)
    slicer.modules.markups.logic().SetActiveList(widget._prompts.node(False))  # placing exclude points
    interaction = slicer.modules.application_logic.GetInteractionNode()
    interaction.SetCurrentInteractionMode(interaction.Place)
    widget.exit()
    assert interaction.GetCurrentInteractionMode() == interaction.ViewTransform
    assert {"setActiveEffect", "removeViewObservations"} <= widget.ui.segmentEditorWidget.names()


def test_shortcuts_before_start_only_say_so(module, monkeypatch):
    widget = _widget(module, monkeypatch)
    for action in (lambda: widget._submitKind("undo"), lambda: widget._submitKind("reset"), widget.onNextSegment,
                   widget.onDeleteSegment):
        widget.ui.statusLabel.text = ""
        action()  # no PyTorch dialog (ensure_dependencies fails the test), no error
        assert widget.ui.statusLabel.text == "Press Start segmenting first."


def test_scene_close_removes_the_prompt_nodes_and_their_observers(module, monkeypatch, scene):
    from CTSAM3DLib.mrml.markups import PromptMarkups

    widget = _widget(module, monkeypatch)
    widget.setParameterNode = lambda node: None
    widget._prompts = prompts = PromptMarkups(scene, lambda *a: pytest.fail("a point after scene close"))
    widget.onSceneStartClose(scene, None)
    assert widget._prompts is None and prompts.positive_node.GetScene() is None
    assert widget._editor.node is None  # the editor node is no longer observed
    prompts.positive_node.AddControlPoint([0.0, 0.0, 0.0])  # its observer is gone: nothing is clicked


def _params(segmentation, volume, **changes):
    fields = {"inputVolume": volume, "segmentation": segmentation, "segmentId": "", "useCpp": False, "maxPatches": 8,
              "largeOrgans": False, "overwrite": "none", "device": "cpu", "checkpointPath": "",
              "overrideWindow": False, "windowMinHu": -500.0, "windowMaxHu": 500.0}
    return types.SimpleNamespace(**{**fields, **changes})


@pytest.mark.parametrize("override, expected", [(False, None), (True, (-500.0, 500.0))])
def test_the_window_spin_boxes_override_a_checkpoint_window_only_when_asked(module, scene, ct_volume, stub_predictor,
                                                                           override, expected):
    from CTSAM3DLib.mrml.editor import EditMask

    logic = module.CTSAM3DLogic()
    logic.set_predictor(stub_predictor)
    loads = []
    logic.load_model = lambda path, device, window: loads.append((path, device, window))
    params = _params(make_segmentation_node(scene), ct_volume, checkpointPath="params.pth", overrideWindow=override)
    saved = []
    session = logic.sessionFor(params, EditMask(), lambda: saved.append(1))
    assert loads == [("params.pth", "cpu", expected)]
    sid = session.add_segment()
    session.click(world_of_voxel(ct_volume, (20, 24, 20)), True, sid)
    assert saved == [1]  # the editor's undo state was saved before the write
    session.delete_segment(sid)
    assert params.segmentation.GetSegmentation().GetSegment(sid) is None
    logic.close()


def test_a_checkpoint_without_a_window_says_where_to_give_it(module, scene, ct_volume):
    from CTSAM3DLib.model.checkpoint import CheckpointError
    from CTSAM3DLib.mrml.editor import EditMask

    logic = module.CTSAM3DLogic()

    def refuse(path, device, window):
        raise CheckpointError("params.pth has no intensity window: give the window explicitly.")

    logic.load_model = refuse
    params = _params(make_segmentation_node(scene), ct_volume, checkpointPath="params.pth")
    with pytest.raises(CheckpointError, match="Override its window"):
        logic.sessionFor(params, EditMask(), lambda: None)
