"""What CTSAM3D needs in Slicer's Python, installed only after the user confirms (never silently).

PyTorch comes from the PyTorch extension (``PyTorchUtils``: a CUDA build that matches the driver). The other
requirements (``Resources/requirements.txt``) go through ``slicer.packaging.pip_ensure`` where this Slicer has
it, else ``slicer.util.pip_install``, with a constraints file that pins PyTorch and Slicer's bundled numpy,
scipy and SimpleITK to their installed versions, so that pip never replaces them. A PyTorch that is already
loaded is never replaced in the running process: the user is told how (uninstall, restart), as
SlicerTotalSegmentator does.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

# The oldest PyTorch CTSAM3DLib runs on: torch.compiler.is_compiling (model/layers.py) came with 2.3
# (scaled_dot_product_attention's scale= with 2.1, weights_only loading with 1.13).
TORCH_MINIMUM = "2.3"
TORCH_REQUIREMENT = f">={TORCH_MINIMUM}"
# Installed distributions pip must leave as they are: the PyTorch extension's torch and Slicer's own packages.
PINNED = ("torch", "numpy", "scipy", "SimpleITK")


def ensure_dependencies(requirements_path: str | Path) -> None:
    """PyTorch through the PyTorch extension, then the other requirements with pip (each after a confirmation).

    Raises:
        RuntimeError: something is missing and was not installed, or Slicer must restart first (the message says
            what to do).
    """
    try:
        import PyTorchUtils
    except ModuleNotFoundError as error:
        raise RuntimeError("CTSAM3D needs the 'PyTorch' extension: install it with the Extensions Manager, restart "
                           "Slicer and try again.") from error
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    installed = installed_version("torch")  # read before torchInstalled(), which imports torch
    if installed is None:
        if torch_logic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT) is None:
            raise RuntimeError("CTSAM3D cannot run without PyTorch, which was not installed.")
    else:
        ensure_torch_version(torch_logic, installed)
    ensure_requirements(requirements_path)


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution (package metadata, nothing imported), or None."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def torch_version_problem(installed: str) -> str | None:
    """Why PyTorch ``installed`` (a version string) cannot run CTSAM3D, or None if it can."""
    from packaging.version import InvalidVersion, Version

    try:
        if Version(installed).release >= Version(TORCH_MINIMUM).release:
            return None
    except InvalidVersion:
        pass
    return f"CTSAM3D needs PyTorch {TORCH_MINIMUM} or newer, but this Slicer has PyTorch {installed}."


def ensure_torch_version(torch_logic: Any, installed: str) -> None:
    """An installed PyTorch older than ``TORCH_MINIMUM``: never replaced while loaded (say how: uninstall in the
    PyTorch Utils module, restart); when not loaded yet, offer the update through the PyTorch extension."""
    import slicer

    problem = torch_version_problem(installed)
    if problem is None:
        return
    if "torch" in sys.modules:
        raise RuntimeError(f"{problem} It is loaded in this Slicer session and cannot be replaced now: open the "
                           "PyTorch Utils module, press 'Uninstall PyTorch', restart Slicer, then press Start in "
                           "CTSAM3D again (it then installs a current PyTorch).")
    if not slicer.util.confirmOkCancelDisplay(f"{problem}\n\nUpdate PyTorch now (PyTorch extension)? Slicer must "
                                              "restart afterwards.", windowTitle="CTSAM3D"):
        raise RuntimeError(f"{problem} Update it in the PyTorch Utils module (Uninstall, restart Slicer), then press "
                           "Start again.")
    torch_logic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT)
    raise RuntimeError("PyTorch was updated: restart Slicer, then press Start again.")


def constraints_text() -> str:
    """pip constraints pinning every installed distribution of ``PINNED`` to its exact version."""
    pins = [f"{name}=={version}" for name in PINNED if (version := installed_version(name)) is not None]
    return "".join(f"{pin}\n" for pin in pins)


def ensure_requirements(requirements_path: str | Path) -> None:
    """Install the missing requirements after the user confirms, pip constrained by ``constraints_text``.

    Raises:
        RuntimeError: the user declined (the message lists what is missing).
    """
    import slicer

    packaging = _slicer_packaging()
    with tempfile.TemporaryDirectory(prefix="CTSAM3D-") as folder:
        constraints = Path(folder) / "constraints.txt"
        constraints.write_text(constraints_text())
        if packaging is not None:  # checks, asks, installs and offers a restart when a loaded package changed
            packaging.pip_ensure(packaging.load_requirements(str(requirements_path)), constraints=str(constraints),
                                 requester="CTSAM3D")
            return
        missing = missing_requirements(requirements_path)
        if not missing:
            return
        if not slicer.util.confirmOkCancelDisplay("CTSAM3D needs these Python packages:\n\n" + "\n".join(missing)
                                                  + "\n\nInstall them now into Slicer's Python?",
                                                  windowTitle="CTSAM3D"):
            raise RuntimeError("CTSAM3D cannot run without: " + ", ".join(missing))
        slicer.util.pip_install([*missing, "--constraint", str(constraints)])


def _slicer_packaging() -> Any:
    """``slicer.packaging`` when this Slicer has its ``pip_ensure`` (newer Slicer), else None."""
    try:
        module = importlib.import_module("slicer.packaging")
    except ImportError:
        return None
    return module if hasattr(module, "pip_ensure") and hasattr(module, "load_requirements") else None


def missing_runtime_packages() -> list[str]:
    """Python packages CTSAM3D needs at run time that this Slicer lacks (none: it can run)."""
    return [name for name in ("torch", "monai", "scipy") if importlib.util.find_spec(name) is None]


def missing_requirements(requirements_path: str | Path) -> list[str]:
    """Lines of requirements.txt whose distribution is absent or whose version does not satisfy them."""
    from packaging.requirements import Requirement

    missing = []
    for line in Path(requirements_path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        version = installed_version(requirement.name)
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            missing.append(line)
    return missing
