"""Tests for CTSAM3DLib.io.points: point files and --point arguments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from CTSAM3DLib.geometry import affine
from CTSAM3DLib.io import PointSpec, Volume, parse_point_arg, points_to_ijk, read_points_file


def _control_point(label: str, position: list[float] | str, status: str = "defined") -> dict:
    """A control point as Slicer 5 writes it."""
    return {"id": "1", "label": label, "description": "", "associatedNodeID": "", "position": position,
            "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0], "selected": True,
            "locked": False, "visibility": True, "positionStatus": status}


def _markups_file(path: Path, control_points: list[dict], **markup_keys: str) -> Path:
    markup = {"type": "Fiducial", "coordinateUnits": "mm", "locked": False, "labelFormat": "%N-%d",
              "controlPoints": control_points, "measurements": [], **markup_keys}
    schema = "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    path.write_text(json.dumps({"@schema": schema + "markups-schema-v1.0.3.json#", "markups": [markup]}))
    return path


def test_markups_json_in_lps(tmp_path: Path) -> None:
    path = _markups_file(tmp_path / "clicks.mrk.json",
                         [_control_point("F-1", [-10.0, -20.0, 30.0]), _control_point("F-2", [1, 2, 3])],
                         coordinateSystem="LPS")
    expected = [PointSpec((-10.0, -20.0, 30.0), True, "lps"), PointSpec((1.0, 2.0, 3.0), True, "lps")]
    assert read_points_file(path) == expected


def test_markups_json_in_ras_and_default_lps(tmp_path: Path) -> None:
    ras = _markups_file(tmp_path / "ras.mrk.json", [_control_point("F-1", [10.0, 20.0, 30.0])], coordinateSystem="RAS")
    assert read_points_file(ras) == [PointSpec((10.0, 20.0, 30.0), True, "ras")]
    legacy = _markups_file(tmp_path / "nosystem.mrk.json", [_control_point("F-1", [1.0, 2.0, 3.0])])
    assert read_points_file(legacy)[0].frame == "lps"


@pytest.mark.parametrize(
    ("label", "is_positive"),
    [("F-1", True), ("-1", False), ("neg-2", False), ("Negative", False), ("NEG", False), ("pos-1", True),
     ("kidney-neg", True)],
)
def test_markups_label_polarity(tmp_path: Path, label: str, is_positive: bool) -> None:
    path = _markups_file(tmp_path / "p.mrk.json", [_control_point(label, [0, 0, 0])], coordinateSystem="LPS")
    assert read_points_file(path)[0].is_positive is is_positive


def test_markups_node_name_polarity(tmp_path: Path) -> None:
    named = _markups_file(tmp_path / "a.mrk.json", [_control_point("F-1", [0, 0, 0])], name="Negative clicks")
    assert read_points_file(named)[0].is_positive is False
    by_file = _markups_file(tmp_path / "negative.mrk.json", [_control_point("F-1", [0, 0, 0])])
    assert read_points_file(by_file)[0].is_positive is False
    positive = _markups_file(tmp_path / "liver.mrk.json", [_control_point("F-1", [0, 0, 0])])
    assert read_points_file(positive)[0].is_positive is True


def test_markups_skip_unplaced_and_report_bad_points(tmp_path: Path) -> None:
    unplaced = _control_point("F-2", "", "undefined")
    path = _markups_file(tmp_path / "p.mrk.json", [_control_point("F-1", [1, 2, 3]), unplaced])
    assert len(read_points_file(path)) == 1
    bad = _markups_file(tmp_path / "bad.mrk.json", [_control_point("F-1", [1, 2, 3]), _control_point("F-7", [1, 2])])
    with pytest.raises(ValueError, match=r"bad\.mrk\.json.*control point 2.*F-7"):
        read_points_file(bad)
    bad_system = _markups_file(tmp_path / "s.mrk.json", [_control_point("F-1", [1, 2, 3])], coordinateSystem="IJK")
    with pytest.raises(ValueError, match="coordinateSystem"):
        read_points_file(bad_system)


def test_plain_json(tmp_path: Path) -> None:
    path = tmp_path / "points.json"
    items = [{"position": [1, 2, 3], "positive": True}, {"position": [4, 5, 6], "positive": False},
             {"position": [7, 8, 9]}]
    path.write_text(json.dumps({"coordinate_system": "ijk", "points": items}))
    assert read_points_file(path) == [PointSpec((1, 2, 3), True, "ijk"), PointSpec((4, 5, 6), False, "ijk"),
                                      PointSpec((7, 8, 9), True, "ijk")]


def test_bare_json_list_uses_default_frame(tmp_path: Path) -> None:
    path = tmp_path / "points.json"
    path.write_text(json.dumps([[1, 2, 3, "+"], [4, 5, 6, "-"], [7, 8, 9]]))
    points = read_points_file(path, default_frame="lps")
    assert [p.is_positive for p in points] == [True, False, True]
    assert {p.frame for p in points} == {"lps"}


@pytest.mark.parametrize(
    ("content", "match"),
    [("{not json", "not valid JSON"), ('{"points": [{"position": [1, 2]}]}', "point 1"),
     ('[[1, 2, 3, "maybe"]]', "polarity"), ('{"coordinate_system": "xyz", "points": []}', "frame"),
     ('{"something": 1}', "expected")],
)
def test_bad_json_raises(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "points.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        read_points_file(path)


def test_csv_with_labels_and_frames(tmp_path: Path) -> None:
    path = tmp_path / "points.csv"
    path.write_text("# clicks\nX, Y, Z, Label, Frame\n1,2,3,+,\n4,5,6,neg,lps\n\n7,8,9,1,ijk\n10,11,12,negative,\n")
    points = read_points_file(path)
    assert points == [PointSpec((1, 2, 3), True, "ras"), PointSpec((4, 5, 6), False, "lps"),
                      PointSpec((7, 8, 9), True, "ijk"), PointSpec((10, 11, 12), False, "ras")]


@pytest.mark.parametrize(
    ("content", "match"),
    [("x,y,z,label\n1,2,3,+\n4,5,oops,-\n", "line 3"), ("x,y,z,label\n1,2,3,?\n", r"line 2.*polarity"),
     ("1,2,3,+,9\n", "without a header"), ("a,b,c\n1,2,3\n", "header"), ("x,y,z,frame\n1,2,3,world\n", "line 2.*frame")],
)
def test_bad_csv_raises(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "points.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        read_points_file(path)


def test_slicer_fcsv(tmp_path: Path) -> None:
    path = tmp_path / "clicks.fcsv"
    path.write_text("# Markups fiducial file version = 5.6\n# CoordinateSystem = LPS\n"
                    "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
                    "1,-10,-20,30,0,0,0,1,1,1,0,neg-1,,,2,0\n2,1,2,3,0,0,0,1,1,1,0,\"F,2\",,,2,0\n"
                    "3,1,2,3,0,0,0,1,1,1,0,F-3,,,0,0\n")
    assert read_points_file(path) == [PointSpec((-10, -20, 30), False, "lps"), PointSpec((1, 2, 3), True, "lps")]


def test_missing_file_and_bad_default_frame(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        read_points_file(tmp_path / "absent.json")
    with pytest.raises(ValueError, match="frame"):
        read_points_file(tmp_path / "absent.json", default_frame="world")


def test_parse_point_arg() -> None:
    assert parse_point_arg("1,2,3") == PointSpec((1, 2, 3), True, "ras")
    assert parse_point_arg(" 1.5, -2, 3e1 , - ", frame="IJK") == PointSpec((1.5, -2, 30), False, "ijk")
    for bad in ("1,2", "1,2,x", "1,2,3,?", "1,2,nan"):
        with pytest.raises(ValueError):
            parse_point_arg(bad)


def test_points_to_ijk_mixes_frames() -> None:
    volume = Volume(np.zeros((4, 5, 6)), [0.5, 1.0, 2.0], [10.0, 20.0, 30.0], np.diag([-1.0, 1.0, 1.0]))
    target_ijk = np.array([1.0, 2.0, 3.0])
    lps = affine.ijk_to_lps(volume, target_ijk)
    points = [PointSpec(tuple(lps), True, "lps"), PointSpec(tuple(affine.lps_to_ras(lps)), False, "ras"),
              PointSpec((1, 2, 3), True, "ijk")]
    np.testing.assert_allclose(points_to_ijk(points, volume), np.tile(target_ijk, (3, 1)), atol=1e-12)


@pytest.mark.parametrize("coordinate_system", [None, "RAS"])
def test_file_written_by_slicer(tmp_path: Path, coordinate_system: str | None) -> None:
    """A markups file saved by Slicer's own storage node (slicer-core) reads back in RAS exactly."""
    slicer = pytest.importorskip("slicer")
    import vtk

    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "clicks")
    node.AddControlPoint(vtk.vtkVector3d(10.0, -20.0, 30.5), "F-1")
    node.AddControlPoint(vtk.vtkVector3d(-1.0, 2.0, -3.0), "neg-1")
    storage = slicer.vtkMRMLMarkupsJsonStorageNode()
    scene.AddNode(storage)
    if coordinate_system == "RAS":
        storage.SetCoordinateSystem(slicer.vtkMRMLStorageNode.CoordinateSystemRAS)
    node.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(str(tmp_path / "clicks.mrk.json"))
    assert storage.WriteData(node)
    points = read_points_file(tmp_path / "clicks.mrk.json")
    assert [p.frame for p in points] == [(coordinate_system or "LPS").lower()] * 2
    as_ras = [p.position if p.frame == "ras" else tuple(affine.lps_to_ras(p.position)) for p in points]
    np.testing.assert_allclose(as_ras, [[10.0, -20.0, 30.5], [-1.0, 2.0, -3.0]])
    assert [p.is_positive for p in points] == [True, False]
