"""The module's setup code, run on slicer-core with stand-ins for Slicer's Qt parts: the Slicer version
check, the PyTorch version floor (and the offered update), installing the other requirements without
touching PyTorch, and the self-test on a Slicer without PyTorch."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from mrml_test_support import import_module_with_stand_ins

REQUIREMENTS = Path(__file__).resolve().parents[2] / "CTSAM3D" / "Resources" / "requirements.txt"


def test_an_old_slicer_is_told_which_version_is_needed(monkeypatch):
    with pytest.raises(ImportError, match=r"needs 3D Slicer 5\.8 or newer"):
        import_module_with_stand_ins(monkeypatch, with_parameter_node_wrapper=False)


def test_torch_version_floor(monkeypatch):
    module = import_module_with_stand_ins(monkeypatch)
    assert module.TORCH_MINIMUM == "2.3" and module.TORCH_REQUIREMENT == ">=2.3"
    for good in ("2.3.0", "2.3.1+cu121", "2.13.0+cpu", "3.0"):
        assert module.torchVersionProblem(good) is None, good
    for old in ("2.1.2", "2.2.2+cu118", "1.13.1"):
        assert "needs PyTorch 2.3 or newer" in module.torchVersionProblem(old) and old in module.torchVersionProblem(old)
    import torch

    assert module.torchVersionProblem(torch.__version__) is None  # the PyTorch the tests run on
    assert hasattr(torch.compiler, "is_compiling")  # the 2.3 API that sets the floor


class _TorchUtils:
    """Stand-in for PyTorchUtils.PyTorchUtilsLogic: records install calls."""

    installs: list = []

    def torchInstalled(self):  # noqa: N802 - PyTorchUtils' name
        return True

    def installTorch(self, askConfirmation=False, torchVersionRequirement=None):  # noqa: N802
        self.installs.append(torchVersionRequirement)
        return object()


def _with_torch_version(monkeypatch, module, version: str, confirm: bool) -> list:
    from importlib import metadata

    import slicer

    real_version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: version if name == "torch" else real_version(name))
    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=_TorchUtils))
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: confirm, raising=False)
    requirements = []
    monkeypatch.setattr(module, "ensureRequirements", lambda path: requirements.append(path))
    _TorchUtils.installs = []
    return requirements


def test_an_old_torch_is_refused_with_a_clear_message(monkeypatch):
    module = import_module_with_stand_ins(monkeypatch)
    requirements = _with_torch_version(monkeypatch, module, "2.2.2+cu121", confirm=False)
    with pytest.raises(RuntimeError, match=r"needs PyTorch 2\.3 or newer, but this Slicer has PyTorch 2\.2\.2"):
        module.ensureDependencies(str(REQUIREMENTS))
    assert _TorchUtils.installs == [] and requirements == []


def test_an_old_torch_is_updated_through_the_pytorch_extension(monkeypatch):
    module = import_module_with_stand_ins(monkeypatch)
    requirements = _with_torch_version(monkeypatch, module, "2.1.0", confirm=True)
    with pytest.raises(RuntimeError, match="restart Slicer"):
        module.ensureDependencies(str(REQUIREMENTS))
    assert _TorchUtils.installs == [">=2.3"] and requirements == []


def test_a_recent_torch_goes_on_to_the_requirements(monkeypatch):
    module = import_module_with_stand_ins(monkeypatch)
    requirements = _with_torch_version(monkeypatch, module, "2.6.0", confirm=False)
    module.ensureDependencies(str(REQUIREMENTS))
    assert _TorchUtils.installs == [] and requirements == [str(REQUIREMENTS)]


def test_requirements_are_installed_without_touching_torch(monkeypatch):
    from importlib import metadata

    import slicer

    module = import_module_with_stand_ins(monkeypatch)
    real_version = metadata.version

    def version(name):
        if name == "monai":
            raise metadata.PackageNotFoundError(name)
        return "2.4.1+cu121" if name == "torch" else real_version(name)

    monkeypatch.setattr(metadata, "version", version)
    monkeypatch.setitem(sys.modules, "slicer.pydeps", None)  # an older Slicer: the module's own dialog and pip
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: True, raising=False)
    calls = []
    monkeypatch.setattr(slicer.util, "pip_install", lambda args: calls.append(args), raising=False)
    module.ensureRequirements(str(REQUIREMENTS))
    (args,) = calls
    assert any(a.startswith("monai") for a in args) and not any(a.startswith("torch") for a in args)
    constraints = Path(args[args.index("--constraint") + 1])
    assert constraints.read_text().split() == ["torch==2.4.1+cu121"]


def test_requirements_with_slicer_pydeps_get_the_constraints(monkeypatch):
    module = import_module_with_stand_ins(monkeypatch)
    calls = []
    pydeps = types.SimpleNamespace(load_requirements=lambda path: ["parsed", path],
                                   pip_ensure=lambda reqs, **kwargs: calls.append((reqs, kwargs)))
    monkeypatch.setitem(sys.modules, "slicer.pydeps", pydeps)
    import slicer

    monkeypatch.setattr(slicer, "pydeps", pydeps, raising=False)
    module.ensureRequirements(str(REQUIREMENTS))
    ((reqs, kwargs),) = calls
    assert reqs == ["parsed", str(REQUIREMENTS)] and kwargs["requester"] == "CTSAM3D"
    assert Path(kwargs["constraints"]).read_text().startswith("torch==")


def test_self_test_reports_missing_packages_instead_of_failing(monkeypatch, caplog):
    module = import_module_with_stand_ins(monkeypatch)
    monkeypatch.setattr(module, "missingRuntimePackages", lambda: ["torch", "monai"])
    test = module.CTSAM3DTest()
    monkeypatch.setattr(test, "setUp", lambda: pytest.fail("the self-test ran without its packages"))
    test.runTest()
    assert "skipped: torch, monai not installed" in caplog.text
