"""Reading click prompts (points with a polarity) from files and the command line.

Every point is a `PointSpec`: a position ``(x, y, z)``, a polarity
(positive = "this belongs to the structure", negative = "this does not") and
the frame of the position: ``"ras"`` (Slicer world mm), ``"lps"`` (ITK/DICOM
world mm) or ``"ijk"`` (voxel indices ``(i, j, k)`` = ``(x, y, z)``, 0-based,
continuous). `points_to_ijk` converts them for a given image.

Accepted files (chosen by extension; other extensions are sniffed):

1. Slicer markups JSON (``.mrk.json``), as saved by 3D Slicer >= 4.11. All
   control points of all markups are read; unplaced points
   (``"positionStatus": "undefined"``) are skipped. Each markup's
   ``coordinateSystem`` ("LPS" or "RAS") gives the frame; Slicer writes "LPS"
   unless told otherwise, and LPS is assumed when the key is missing.
   Polarity: a point is negative when its ``label`` starts with "-" or "neg"
   (any case, e.g. "neg-1", "Negative", "-3"), or when the markup's name
   contains "neg" (any case). The name is the markup's ``"name"`` key if
   present, else the file name (Slicer names a loaded node after its file), so
   ``negative.mrk.json`` holds negative points. Everything else is positive.
2. Slicer legacy fiducial CSV (``.fcsv``): the ``# CoordinateSystem`` header
   line gives the frame (LPS, RAS, or 0 = RAS / 1 = LPS); polarity from the
   ``label`` column as above.
3. Plain JSON (``.json``)::

       {"coordinate_system": "ras",
        "points": [{"position": [10.0, -5.5, 30.0], "positive": true},
                   {"position": [12.0, -4.0, 31.0], "positive": false}]}

   ``coordinate_system`` is "ras", "lps" or "ijk" (default: the reader's
   ``default_frame``); ``positive`` defaults to true; a point may carry its own
   ``"frame"``. A bare list is accepted too:
   ``[[10.0, -5.5, 30.0, "+"], [12.0, -4.0, 31.0, "-"]]`` (polarity optional).
4. CSV (``.csv``, ``.txt``): a header row ``x,y,z,label`` (any case and column
   order, ``label`` optional), optionally a ``frame`` column (ras/lps/ijk; empty
   means ``default_frame``); or no header, when the first row starts with three
   numbers: then every row is ``x,y,z[,label]`` in ``default_frame``. Labels:
   ``+ 1 pos positive true`` or ``- 0 neg negative false``. Blank lines and
   lines starting with ``#`` are skipped.

Malformed entries raise `ValueError` naming the file and the line or point.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from CTSAM3DLib.io.volume import Volume

logger = logging.getLogger(__name__)

# Frames a point position can be given in.
FRAMES = ("ras", "lps", "ijk")
# Polarity words (lower case) accepted in CSV labels, JSON lists and --point.
_POSITIVE_WORDS = frozenset({"+", "1", "pos", "positive", "true"})
_NEGATIVE_WORDS = frozenset({"-", "0", "neg", "negative", "false"})


@dataclass(frozen=True)
class PointSpec:
    """One click prompt.

    Attributes:
        position: ``(x, y, z)`` in ``frame`` (mm for ras/lps, voxels for ijk).
        is_positive: True for "inside the structure", False for "outside".
        frame: "ras", "lps" or "ijk".
    """

    position: tuple[float, float, float]
    is_positive: bool
    frame: str

    def __post_init__(self) -> None:
        position = tuple(float(v) for v in self.position)
        if len(position) != 3 or not all(math.isfinite(v) for v in position):
            raise ValueError(f"PointSpec.position must be 3 finite numbers (x, y, z), got {self.position!r}.")
        frame = str(self.frame).lower()
        if frame not in FRAMES:
            raise ValueError(f"PointSpec.frame must be one of {FRAMES}, got {self.frame!r}.")
        object.__setattr__(self, "position", position)
        object.__setattr__(self, "is_positive", bool(self.is_positive))
        object.__setattr__(self, "frame", frame)


def points_to_ijk(points: list[PointSpec], volume: Volume) -> np.ndarray:
    """Continuous voxel indices of points given in any frame.

    Args:
        points: the points (any mix of frames).
        volume: the image the indices refer to.

    Returns:
        float64 ``(N, 3)`` indices ``(i, j, k)`` = ``(x, y, z)``.
    """
    from CTSAM3DLib.geometry import affine  # lazy: geometry imports io

    converters = {"ras": affine.ras_to_ijk, "lps": affine.lps_to_ijk, "ijk": lambda _v, p: np.asarray(p, float)}
    result = np.empty((len(points), 3))
    for n, point in enumerate(points):
        result[n] = converters[point.frame](volume, np.array(point.position))
    return result


def parse_point_arg(text: str, frame: str = "ras") -> PointSpec:
    """Parse a command-line point ``"X,Y,Z"`` or ``"X,Y,Z,+"`` / ``"X,Y,Z,-"``.

    Args:
        text: three numbers and an optional polarity (default positive).
        frame: frame of the numbers: "ras", "lps" or "ijk".

    Returns:
        The point.

    Raises:
        ValueError: if the text is not of that form.
    """
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (3, 4):
        raise ValueError(f"Point '{text}' must be 'X,Y,Z' or 'X,Y,Z,+' or 'X,Y,Z,-'.")
    is_positive = _parse_polarity(parts[3], f"point '{text}'") if len(parts) == 4 else True
    return PointSpec(_parse_position(parts[:3], f"point '{text}'"), is_positive, _check_frame(frame, "frame"))


def read_points_file(path: str | Path, default_frame: str = "ras") -> list[PointSpec]:
    """Read click prompts from a Slicer markups, plain JSON, CSV or .fcsv file.

    Args:
        path: the file (formats in this module's docstring).
        default_frame: frame for plain JSON / CSV points that do not name one.

    Returns:
        The points in file order.

    Raises:
        ValueError: if the file is missing, unparsable, or has a malformed point.
    """
    path = Path(path)
    default_frame = _check_frame(default_frame, "default_frame")
    if not path.is_file():
        raise ValueError(f"Points file '{path}' does not exist.")
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    if suffix == ".fcsv":
        points = _read_fcsv(text, path)
    elif suffix == ".json" or (suffix not in (".csv", ".txt") and text.lstrip()[:1] in ("{", "[")):
        points = _read_json(text, path, default_frame)
    else:
        points = _read_csv(text, path, default_frame)
    logger.info("Read %d points from %s", len(points), path)
    return points


def _check_frame(frame: object, where: str) -> str:
    name = str(frame).strip().lower()
    if name not in FRAMES:
        raise ValueError(f"{where}: coordinate frame must be one of {', '.join(FRAMES)}, got {frame!r}.")
    return name


def _parse_position(values: Any, where: str) -> tuple[float, float, float]:
    try:
        position = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        position = ()
    if len(position) != 3 or not all(math.isfinite(v) for v in position):
        raise ValueError(f"{where}: position must be 3 finite numbers (x, y, z), got {values!r}.")
    return position  # type: ignore[return-value]


def _parse_polarity(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in _POSITIVE_WORDS:
        return True
    if word in _NEGATIVE_WORDS:
        return False
    raise ValueError(f"{where}: polarity must be one of + - 1 0 pos neg positive negative, got {value!r}.")


def _is_negative_label(label: str) -> bool:
    return label.strip().lower().startswith(("-", "neg"))


def _read_json(text: str, path: Path, default_frame: str) -> list[PointSpec]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"Points file '{path}' is not valid JSON: {error}.") from None
    if isinstance(data, dict) and "markups" in data:
        return _read_markups(data["markups"], path)
    if isinstance(data, dict) and "points" in data:
        frame = _check_frame(data.get("coordinate_system", default_frame), f"'{path}'")
        items = data["points"]
    elif isinstance(data, list):
        frame, items = default_frame, data
    else:
        raise ValueError(f"Points file '{path}': expected Slicer markups, {{\"points\": [...]}} or a list of points.")
    if not isinstance(items, list):
        raise ValueError(f"Points file '{path}': \"points\" must be a list.")
    return [_json_point(item, frame, f"'{path}' point {n + 1}") for n, item in enumerate(items)]


def _json_point(item: Any, frame: str, where: str) -> PointSpec:
    if isinstance(item, dict):
        if "position" not in item:
            raise ValueError(f"{where}: missing \"position\".")
        polarity = item.get("positive", item.get("label", True))
        point_frame = _check_frame(item.get("frame", frame), where)
        return PointSpec(_parse_position(item["position"], where), _parse_polarity(polarity, where), point_frame)
    if isinstance(item, list) and len(item) in (3, 4):
        is_positive = _parse_polarity(item[3], where) if len(item) == 4 else True
        return PointSpec(_parse_position(item[:3], where), is_positive, frame)
    raise ValueError(
        f"{where}: expected {{\"position\": [x, y, z], \"positive\": true}} or [x, y, z, \"+\"], got {item!r}."
    )


def _read_markups(markups: Any, path: Path) -> list[PointSpec]:
    if not isinstance(markups, list):
        raise ValueError(f"Markups file '{path}': \"markups\" must be a list.")
    file_name = path.name.split(".")[0]
    points: list[PointSpec] = []
    for m, markup in enumerate(markups):
        where = f"Markups file '{path}' markup {m + 1}"
        if not isinstance(markup, dict):
            raise ValueError(f"{where}: expected an object, got {markup!r}.")
        system = str(markup.get("coordinateSystem", "LPS"))
        if system.upper() not in ("LPS", "RAS"):
            raise ValueError(f"{where}: coordinateSystem must be LPS or RAS, got {system!r}.")
        is_negative_node = "neg" in str(markup.get("name", file_name)).lower()
        for c, control in enumerate(markup.get("controlPoints") or []):
            point_where = f"{where} control point {c + 1}"
            if not isinstance(control, dict):
                raise ValueError(f"{point_where}: expected an object, got {control!r}.")
            if control.get("positionStatus", "defined") == "undefined":
                continue
            label = str(control.get("label", ""))
            is_positive = not (is_negative_node or _is_negative_label(label))
            position = _parse_position(control.get("position"), f"{point_where} ('{label}')")
            points.append(PointSpec(position, is_positive, system.lower()))
    return points


def _read_fcsv(text: str, path: Path) -> list[PointSpec]:
    frame = "lps"
    points: list[PointSpec] = []
    for line_number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if row and row[0].startswith("#"):
            key, _, value = ",".join(row).lstrip("# ").partition("=")
            if key.strip().lower() == "coordinatesystem":
                frame = {"0": "ras", "1": "lps"}.get(value.strip(), value.strip().lower())
                frame = _check_frame(frame, f"'{path}' line {line_number}")
            continue
        if not any(cell.strip() for cell in row):
            continue
        where = f"'{path}' line {line_number}"
        if len(row) < 4:
            raise ValueError(f"{where}: expected id,x,y,z,...,label, got {row!r}.")
        if len(row) > 14 and row[14].strip() == "0":
            continue  # unplaced point (position status "undefined")
        label = row[11] if len(row) > 11 else ""
        points.append(PointSpec(_parse_position(row[1:4], where), not _is_negative_label(label), frame))
    return points


def _read_csv(text: str, path: Path, default_frame: str) -> list[PointSpec]:
    rows = [(n, row) for n, row in enumerate(csv.reader(text.splitlines()), start=1)
            if any(cell.strip() for cell in row) and not row[0].lstrip().startswith("#")]
    if not rows:
        return []
    header_line, header = rows[0]
    if _starts_with_numbers(header):
        columns, body = {"x": 0, "y": 1, "z": 2, "label": 3}, rows
    else:
        columns, body = {name.strip().lower(): index for index, name in enumerate(header)}, rows[1:]
    if not {"x", "y", "z"} <= columns.keys():
        raise ValueError(
            f"CSV points file '{path}' line {header_line}: the first row must be a header naming "
            f"columns x,y,z (and optionally label, frame), or a point x,y,z[,label], got {header!r}."
        )
    points = []
    for line_number, row in body:
        where = f"'{path}' line {line_number}"
        if body is rows and len(row) not in (3, 4):
            raise ValueError(f"{where}: a CSV file without a header needs x,y,z or x,y,z,label per row, got {row!r}.")
        cells = {name: (row[index].strip() if index < len(row) else "") for name, index in columns.items()}
        position = _parse_position([cells["x"], cells["y"], cells["z"]], where)
        is_positive = _parse_polarity(cells["label"], where) if cells.get("label") else True
        frame = _check_frame(cells["frame"], where) if cells.get("frame") else default_frame
        points.append(PointSpec(position, is_positive, frame))
    return points


def _starts_with_numbers(row: list[str]) -> bool:
    """Whether a CSV row is a point (three numbers first) rather than a header."""
    try:
        [float(cell) for cell in row[:3]]
    except ValueError:
        return False
    return len(row) >= 3
