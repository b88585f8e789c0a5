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
    assert len(lines) <= 700 and end - start <= 320  # the widget: wiring only (Qt parts cannot run in CI)


def test_cmake_lists_ship_module_library_and_resources():
    top = (REPO / "CMakeLists.txt").read_text()
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in top and "add_subdirectory(CTSAM3D)" in top
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert f"set(EXTENSION_{key} " in top
    module = (MODULE_DIR / "CMakeLists.txt").read_text()
    for needed in ("slicerMacroBuildScriptedModule", "slicer_add_python_unittest",
                   "weights/ctsam3d_compact.pt", "sample/abdomen_pelvis/ct.nii.gz", "sample/reference/*"):
        assert needed in module
    for resource in re.findall(r"^\s+(Resources/\S+)$", module, flags=re.MULTILINE):
        path = MODULE_DIR / resource.replace("${MODULE_NAME}", "CTSAM3D")
        assert path.is_file(), path


def test_cmake_ships_every_python_file_of_the_module_folder():
    module = (MODULE_DIR / "CMakeLists.txt").read_text()
    scripts = set(re.search(r"set\(MODULE_PYTHON_SCRIPTS\s+([^)]*)\)", module).group(1).split())
    present = {str(p.relative_to(MODULE_DIR)) for p in MODULE_DIR.rglob("*.py")} - {"CTSAM3D.py"}
    assert present and present <= scripts, sorted(present - scripts)


def _public_names() -> dict[str, str]:
    tree = ast.parse((REPO / "CTSAM3DLib" / "__init__.py").read_text())
    (value,) = [n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                and getattr(n.targets[0], "id", None) == "_PUBLIC"]
    return ast.literal_eval(value)


def _module_file(name: str) -> Path | None:
    path = REPO.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported_library_files(start: Path) -> set[str]:
    """CTSAM3DLib files imported (anywhere in a file, lazily too) from ``start`` on, transitively."""
    public, seen, todo = _public_names(), set(), [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                names += [public[a.name] for a in node.names if node.module == "CTSAM3DLib" and a.name in public]
            for name in (n for n in names if n.split(".")[0] == "CTSAM3DLib"):
                parts = name.split(".")
                todo += [f for f in (_module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1)) if f]
    return {str(p.relative_to(REPO)) for p in seen if p.parts[len(REPO.parts)] == "CTSAM3DLib"}


def test_the_extension_ships_exactly_the_library_files_the_module_imports():
    module = (MODULE_DIR / "CMakeLists.txt").read_text()
    shipped = set(re.search(r"set\(CTSAM3DLIB_SOURCES\s+([^)]*)\)", module).group(1).split())
    needed = set().union(*(_imported_library_files(f) for f in [MODULE_FILE, *MODULE_DIR.glob("CTSAM3DSlicer/*.py")]))
    assert shipped == needed, (f"update CTSAM3DLIB_SOURCES in CTSAM3D/CMakeLists.txt: add {sorted(needed - shipped)}, "
                               f"drop {sorted(shipped - needed)}")
    assert "CTSAM3DLib/mrml/logic.py" in needed and not any("/cli/" in f or "/train/" in f for f in needed)


def test_icon_and_screenshot_path():
    from PIL import Image

    assert Image.open(MODULE_DIR / "Resources" / "Icons" / "CTSAM3D.png").size == (128, 128)
    readme = (REPO / "Resources" / "Screenshots" / "README.md").read_text()
    assert "ctsam3d-liver.png" in readme
    assert "Resources/Screenshots/ctsam3d-liver.png" in (REPO / "CMakeLists.txt").read_text()


def test_catalogue_entries():
    entry = json.loads((REPO / "CTSAM3D.json").read_text())
    assert {"$schema", "category", "scm_url"} <= set(entry) and entry["build_dependencies"] == ["PyTorch"]
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",  # v1.0.2
               "dicom_support_rule", "build_subdirectory", "enabled", "tier"}
    assert set(entry) <= allowed, sorted(set(entry) - allowed)
    license_text = (REPO / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
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


def test_shipped_files_hold_no_machine_paths():
    shipped = [REPO / "Resources" / "sample" / "reference" / "clicks.json", REPO / "CTSAM3D.json",
               REPO / "CTSAM3D.s4ext", REPO / "CMakeLists.txt", MODULE_DIR / "CMakeLists.txt"]
    for path in shipped:
        found = re.findall(r"(?:\"|\s)(/(?:work|home|tmp|Users|root)/[^\"\s]*|[A-Za-z]:\\\\[^\"\s]*)", path.read_text())
        assert not found, f"{path.name} records machine paths: {found}"


def _metadata_urls() -> list[str]:
    top = (REPO / "CMakeLists.txt").read_text()
    s4ext = (REPO / "CTSAM3D.s4ext").read_text()
    entry = json.loads((REPO / "CTSAM3D.json").read_text())
    return re.findall(r'EXTENSION_(?:HOMEPAGE|ICONURL|SCREENSHOTURLS) "([^"]+)"', top) + re.findall(
        r"^(?:homepage|iconurl|screenshoturls|scmurl) (\S+)", s4ext, flags=re.MULTILINE) + [entry["scm_url"]]


def test_metadata_urls_point_to_files_of_this_repository():
    entry = json.loads((REPO / "CTSAM3D.json").read_text())
    project = re.fullmatch(r"https://github\.com/([^/]+/[^/]+)\.git", entry["scm_url"]).group(1)
    for url in _metadata_urls():
        found = re.fullmatch(rf"https://(?:raw\.githubusercontent\.com/{project}/main|github\.com/{project}/blob/main)"
                             r"/(.+)|https://github\.com/" + project + r"\.git", url)
        assert found, f"{url} is not a file of {project}"
        assert found.group(1) is None or (REPO / found.group(1)).is_file(), url


def test_minimum_slicer_and_demo_weights_are_stated_everywhere():
    top = (REPO / "CMakeLists.txt").read_text()
    assert 'set(CTSAM3D_MINIMUM_SLICER "5.10")' in top and "VERSION_LESS CTSAM3D_MINIMUM_SLICER" in top
    assert 'MINIMUM_SLICER = "5.10"' in MODULE_FILE.read_text()
    description = re.search(r'set\(EXTENSION_DESCRIPTION "([^"]+)"', top).group(1)
    s4ext = dict(line.split(" ", 1) for line in (REPO / "CTSAM3D.s4ext").read_text().splitlines()
                 if line and not line.startswith("#"))
    assert s4ext["description"] == description
    assert "demo model" in description and "Slicer 5.10 or newer" in description
    guide = (REPO / "docs" / "slicer.md").read_text()
    assert "5.10 or newer" in guide and "5.8 or newer" not in guide and "slicer.pydeps" not in guide
    assert "demo" in MODULE_FILE.read_text() and "demo" in UI_FILE.read_text()
