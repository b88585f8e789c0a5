"""The module's setup code, run on slicer-core with stand-ins for Slicer's Qt parts: the Slicer version
check, the PyTorch version floor (a loaded PyTorch is never replaced), installing the other requirements
through ``slicer.packaging`` with Slicer's own packages pinned, and the self-test on a Slicer without PyTorch."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from mrml_test_support import import_module_with_stand_ins

REQUIREMENTS = Path(__file__).resolve().parents[2] / "CTSAM3D" / "Resources" / "requirements.txt"


@pytest.fixture
def deps(monkeypatch):
    """``CTSAM3DSlicer.dependencies`` as the module imports it (slicer-core, stand-ins for the Qt parts)."""
    import slicer

    import_module_with_stand_ins(monkeypatch)
    from CTSAM3DSlicer import dependencies

    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: pytest.fail("asked"), raising=False)
    return dependencies


def test_an_old_slicer_is_told_which_version_is_needed(monkeypatch):
    with pytest.raises(ImportError, match=r"needs 3D Slicer 5\.10 or newer"):
        import_module_with_stand_ins(monkeypatch, with_parameter_node_wrapper=False)


def test_slicer_5_8_with_python_3_9_is_told_5_10(monkeypatch):
    monkeypatch.setattr(sys, "version_info", (3, 9, 10, "final", 0))
    with pytest.raises(ImportError, match=r"needs 3D Slicer 5\.10 or newer.*Python is"):
        import_module_with_stand_ins(monkeypatch)


def test_torch_version_floor(deps):
    assert deps.TORCH_MINIMUM == "2.3" and deps.TORCH_REQUIREMENT == ">=2.3"
    for good in ("2.3.0", "2.3.1+cu121", "2.13.0+cpu", "3.0"):
        assert deps.torch_version_problem(good) is None, good
    for old in ("2.1.2", "2.2.2+cu118", "1.13.1"):
        problem = deps.torch_version_problem(old)
        assert "needs PyTorch 2.3 or newer" in problem and old in problem
    import torch

    assert deps.torch_version_problem(torch.__version__) is None  # the PyTorch the tests run on
    assert hasattr(torch.compiler, "is_compiling")  # the 2.3 API that sets the floor


class _TorchUtils:
    """Stand-in for PyTorchUtils.PyTorchUtilsLogic: records install calls."""

    installs: list = []

    def torchInstalled(self):  # noqa: N802 - PyTorchUtils' name
        return True

    def installTorch(self, askConfirmation=False, torchVersionRequirement=None):  # noqa: N802
        self.installs.append((askConfirmation, torchVersionRequirement))
        return object()


def _with_torch(monkeypatch, deps, version: str | None, confirm: bool) -> list:
    import slicer

    monkeypatch.setattr(deps, "installed_version", lambda name: version if name == "torch" else "1.0")
    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=_TorchUtils))
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: confirm, raising=False)
    requirements = []
    monkeypatch.setattr(deps, "ensure_requirements", lambda path: requirements.append(path))
    _TorchUtils.installs = []
    return requirements


def test_a_loaded_old_torch_is_never_replaced_in_the_running_slicer(monkeypatch, deps):
    requirements = _with_torch(monkeypatch, deps, "2.2.2+cu121", confirm=True)  # torch is imported here
    with pytest.raises(RuntimeError, match=r"needs PyTorch 2\.3 or newer.*Uninstall PyTorch.*restart Slicer"):
        deps.ensure_dependencies(REQUIREMENTS)
    assert _TorchUtils.installs == [] and requirements == []


def test_an_old_torch_not_loaded_yet_is_updated_through_the_pytorch_extension(monkeypatch, deps):
    requirements = _with_torch(monkeypatch, deps, "2.1.0", confirm=True)
    monkeypatch.delitem(sys.modules, "torch")
    with pytest.raises(RuntimeError, match="restart Slicer"):
        deps.ensure_dependencies(REQUIREMENTS)
    assert _TorchUtils.installs == [(False, ">=2.3")] and requirements == []


def test_a_missing_torch_is_installed_after_the_pytorch_extension_asks(monkeypatch, deps):
    requirements = _with_torch(monkeypatch, deps, None, confirm=False)
    deps.ensure_dependencies(REQUIREMENTS)
    assert _TorchUtils.installs == [(True, ">=2.3")] and requirements == [REQUIREMENTS]


def test_a_recent_torch_goes_on_to_the_requirements(monkeypatch, deps):
    requirements = _with_torch(monkeypatch, deps, "2.6.0", confirm=False)
    deps.ensure_dependencies(REQUIREMENTS)
    assert _TorchUtils.installs == [] and requirements == [REQUIREMENTS]


def test_constraints_pin_torch_and_slicers_own_packages(deps):
    from importlib import metadata

    pins = deps.constraints_text().split()
    for name in ("torch", "numpy", "scipy", "SimpleITK"):
        assert f"{name}=={metadata.version(name)}" in pins, name


def test_requirements_are_installed_without_touching_pinned_packages(monkeypatch, deps):
    import slicer

    monkeypatch.setattr(deps, "_slicer_packaging", lambda: None)  # a Slicer without slicer.packaging.pip_ensure
    monkeypatch.setattr(deps, "missing_requirements", lambda path: ["monai>=1.3"])
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: True, raising=False)
    calls = []

    def pip_install(args):
        constraints = Path(args[args.index("--constraint") + 1])
        calls.append((args, constraints, constraints.read_text().split()))

    monkeypatch.setattr(slicer.util, "pip_install", pip_install, raising=False)
    deps.ensure_requirements(REQUIREMENTS)
    ((args, constraints, pins),) = calls
    assert args[0] == "monai>=1.3" and not any(a.startswith("torch") for a in args)
    assert {p.split("==")[0] for p in pins} == {"torch", "numpy", "scipy", "SimpleITK"}
    assert not constraints.parent.exists()  # the temporary folder is removed


def test_requirements_go_through_slicer_packaging_when_it_has_pip_ensure(monkeypatch, deps):
    calls = []

    def pip_ensure(reqs, **kwargs):
        calls.append((reqs, kwargs, Path(kwargs["constraints"]).read_text()))

    packaging = types.ModuleType("slicer.packaging")
    packaging.load_requirements = lambda path: ["parsed", path]
    packaging.pip_ensure = pip_ensure
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    deps.ensure_requirements(REQUIREMENTS)
    ((reqs, kwargs, pins),) = calls
    assert reqs == ["parsed", str(REQUIREMENTS)] and kwargs["requester"] == "CTSAM3D"
    assert "torch==" in pins and "numpy==" in pins and not Path(kwargs["constraints"]).exists()


def test_self_test_reports_missing_packages_instead_of_failing(monkeypatch, caplog):
    module = import_module_with_stand_ins(monkeypatch)
    monkeypatch.setattr(module, "missing_runtime_packages", lambda: ["torch", "monai"])
    test = module.CTSAM3DTest()
    monkeypatch.setattr(test, "setUp", lambda: pytest.fail("the self-test ran without its packages"))
    test.runTest()
    assert "skipped: torch, monai not installed" in caplog.text
