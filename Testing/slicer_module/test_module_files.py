"""The Slicer module and extension files, checked without Slicer.

``import CTSAM3D`` outside Slicer must fail cleanly (an ImportError that says it needs 3D Slicer);
the widget's names must exist in the .ui; the parameter names in the .ui must be fields of the
parameter node; the CMake, .s4ext and JSON metadata must be complete and point at existing files.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "CTSAM3D"
MODULE_FILE = MODULE_DIR / "CTSAM3D.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "CTSAM3D.ui"


def test_importing_the_module_outside_slicer_fails_cleanly():
    spec = importlib.util.spec_from_file_location("CTSAM3D", MODULE_FILE)
    module = importlib.util.module_from_spec(spec)
    with pytest.raises(ImportError, match="runs only inside 3D Slicer"):
        spec.loader.exec_module(module)


def _ui_widgets() -> dict[str, ElementTree.Element]:
    return {w.get("name"): w for w in ElementTree.parse(UI_FILE).getroot().iter("widget")}


def _parameter_fields() -> set[str]:
    tree = ast.parse(MODULE_FILE.read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CTSAM3DParameterNode"]
    return {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}


def test_widget_names_exist_in_the_ui():
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text()))
    used |= set(re.findall(r'"(\w+Button)"', MODULE_FILE.read_text()))
    missing = used - set(_ui_widgets())
    assert not missing, f"CTSAM3D.py uses widgets the .ui lacks: {sorted(missing)}"


def test_ui_parameter_names_are_parameter_node_fields():
    names = set()
    for widget in _ui_widgets().values():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                names.add(prop.find("string").text)
    fields = _parameter_fields()
    assert names and names <= fields, f"unknown parameter names in the .ui: {sorted(names - fields)}"
    assert {"inputVolume", "segmentation", "useCpp", "maxPatches", "device", "checkpointPath"} <= names


def test_module_size_budget():
    lines = MODULE_FILE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("class CTSAM3DWidget"))
    end = next(i for i, line in enumerate(lines) if i > start and re.match(r"^(class|def) ", line))
    assert len(lines) <= 600 and end - start <= 250


def test_cmake_lists_ship_module_library_and_resources():
    top = (REPO / "CMakeLists.txt").read_text()
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in top and "add_subdirectory(CTSAM3D)" in top
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert f"set(EXTENSION_{key} " in top
    module = (MODULE_DIR / "CMakeLists.txt").read_text()
    for needed in ("slicerMacroBuildScriptedModule", "slicer_add_python_unittest", "CTSAM3DLib/*.py",
                   "weights/ctsam3d_compact.pt", "sample/abdomen_pelvis/ct.nii.gz", "sample/reference/*"):
        assert needed in module
    for resource in re.findall(r"^\s+(Resources/\S+)$", module, flags=re.MULTILINE):
        path = MODULE_DIR / resource.replace("${MODULE_NAME}", "CTSAM3D")
        assert path.is_file(), path
    for subpackage in re.search(r"set\(CTSAM3DLIB_SUBPACKAGES ([^)]*)\)", module).group(1).split():
        assert (REPO / "CTSAM3DLib" / subpackage / "__init__.py").is_file()


def test_icon_and_screenshot_path():
    from PIL import Image

    assert Image.open(MODULE_DIR / "Resources" / "Icons" / "CTSAM3D.png").size == (128, 128)
    readme = (REPO / "Resources" / "Screenshots" / "README.md").read_text()
    assert "ctsam3d-liver.png" in readme
    assert "Resources/Screenshots/ctsam3d-liver.png" in (REPO / "CMakeLists.txt").read_text()


def test_catalogue_entries():
    entry = json.loads((REPO / "CTSAM3D.json").read_text())
    assert {"$schema", "category", "scm_url"} <= set(entry) and entry["build_dependencies"] == ["PyTorch"]
    s4ext = dict(line.split(" ", 1) for line in (REPO / "CTSAM3D.s4ext").read_text().splitlines()
                 if line and not line.startswith("#"))
    for key in ("scm", "scmurl", "scmrevision", "depends", "homepage", "contributors", "category", "iconurl",
                "status", "description", "screenshoturls", "enabled"):
        assert s4ext.get(key), key
    assert s4ext["depends"] == "PyTorch" and s4ext["scmurl"] == entry["scm_url"]


def test_requirements_do_not_list_torch():
    text = (MODULE_DIR / "Resources" / "requirements.txt").read_text()
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    names = {re.split(r"[<>=!~ ]", line)[0].lower() for line in lines if line}
    assert "monai" in names and "torch" not in names
