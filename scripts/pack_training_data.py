"""Pack TotalSegmentator-layout subjects into a small .tar.xz for a training machine.

The GPU machine lent to this project takes at most 64 MiB per call (checkout included), and
gzip-compressed int16 CTs are about twice what the model needs. Each CT is stored as uncompressed
NIfTI with uint8 voxels over the training window and the NIfTI scaling (``scl_slope``,
``scl_inter``) that maps them back to HU: SimpleITK reads it as float HU clamped to the window
(steps of 7.8 HU for [-1000, 1000], below the 10 HU noise training adds). Labels are stored as
uncompressed uint8 NIfTI. xz then packs the lot to about 45 % of the gzip originals. After
unpacking, ``gzip`` each ``ct.nii`` (the layout's ``ct.nii.gz``) and train on the folder.

    python scripts/pack_training_data.py --data ../shared/data/totalseg-format --split train \\
        --output .gpu_data/train.tar.xz [--subjects 'hn_kbp_1*'] [--exclude 'hn_kbp_2*'] [--window -1000,1000]

The window must be the training config's ``window_hu``: voxels outside it are clamped.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import io
import lzma
import struct
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

# Byte offset of scl_slope (then scl_inter) in a NIfTI-1 header.
SCL_OFFSET = 112


def quantised_nifti(path: Path, window: tuple[float, float]) -> bytes:
    """The CT at ``path`` as NIfTI bytes: uint8 over ``window`` plus the scaling back to HU."""
    image = sitk.ReadImage(str(path))
    lo, hi = window
    hu = sitk.GetArrayViewFromImage(image).astype(np.float32)
    q = np.clip(np.rint((hu - lo) * 255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    out = sitk.GetImageFromArray(q)
    out.CopyInformation(image)
    data = bytearray(_nifti_bytes(out))
    data[SCL_OFFSET:SCL_OFFSET + 8] = struct.pack("<ff", (hi - lo) / 255.0, lo)
    return bytes(data)


def label_nifti(path: Path) -> bytes:
    """A binary label as uncompressed uint8 NIfTI bytes (xz packs these far better than gzip)."""
    image = sitk.ReadImage(str(path))
    mask = sitk.Cast(sitk.NotEqual(image, 0), sitk.sitkUInt8)
    return _nifti_bytes(mask)


def _nifti_bytes(image: sitk.Image) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "x.nii"
        sitk.WriteImage(image, str(target), useCompression=False)
        return target.read_bytes()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), int(time.time())
    tar.addfile(info, io.BytesIO(data))


def pack(root: Path, splits: list[str], patterns: list[str], window: tuple[float, float], output: Path,
         exclude: list[str] = ()) -> int:
    """Write the chosen subjects of ``root`` (``patterns`` less ``exclude``) to ``output`` (tar.xz); returns how many."""
    with (root / "meta.csv").open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter=";") if r["split"] in splits]
    rows = [r for r in rows if any(fnmatch.fnmatchcase(r["image_id"], p) for p in patterns)
            and not any(fnmatch.fnmatchcase(r["image_id"], p) for p in exclude)]
    tmp = output.with_name(f".{output.name}.tmp")
    output.parent.mkdir(parents=True, exist_ok=True)
    with lzma.open(tmp, "wb", preset=9) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        meta = "image_id;split\n" + "".join(f"{r['image_id']};{r['split']}\n" for r in rows)
        _add(tar, "meta.csv", meta.encode())
        for r in rows:
            sid = r["image_id"]
            _add(tar, f"{sid}/ct.nii", quantised_nifti(root / sid / "ct.nii.gz", window))
            for label in sorted((root / sid / "segmentations").glob("*.nii.gz")):
                _add(tar, f"{sid}/segmentations/{label.name[:-3]}", label_nifti(label))
    tmp.replace(output)
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="TotalSegmentator-layout folder with meta.csv")
    parser.add_argument("--split", action="append", required=True, help="split(s) to pack (repeatable)")
    parser.add_argument("--subjects", action="append", default=None, help="id patterns (fnmatch; default all)")
    parser.add_argument("--exclude", action="append", default=[], help="id patterns to leave out (fnmatch)")
    parser.add_argument("--window", default="-1000,1000", help="HU window MIN,MAX (the config's window_hu)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    lo, hi = (float(v) for v in args.window.split(","))
    if not lo < hi:
        parser.error(f"--window needs MIN < MAX, got {args.window}")
    n = pack(args.data, args.split, args.subjects or ["*"], (lo, hi), args.output, args.exclude)
    print(f"{args.output}: {n} subjects, {args.output.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
