"""Benchmark (not a test): the Slicer logic's overhead per click, without the model.

From a world RAS point and an MRML volume to the segment updated in MRML, for a 512 x 512 x 141
CT (0.98 x 0.98 x 2 mm, like the shared thorax CT), on real MRML through slicer-core. The network
is replaced by ``StubPredictor`` (a test double: a ball around the click, no network), so what is
timed is:

* ``prepare``: world RAS -> the volume's local RAS through its parent transform (MRML read);
* ``engine``: the engine's own work around the network (patch resampling, blending, resampling
  the probabilities onto the input grid, undo snapshot) - engine, not logic;
* ``commit``: the region write into the segment (SetBinaryLabelmapToSegment) and the click tag;
* ``logic`` = prepare + commit: the MRML conversion plus write, the target being <= 50 ms on
  2 CPU cores;
* once per session: the session set-up on the GUI thread, and the volume node -> engine copy that the first
  job does on the worker thread (voxel copy + IJKToRAS + checks).

Run: ``python scripts/slicer/benchmark_click_overhead.py [--threads 2] [--clicks 20] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

SHAPE_ZYX = (141, 512, 512)
SPACING_MM = (0.98, 0.98, 2.0)


def benchmark_click_overhead(clicks: int = 20, seed: int = 0) -> dict:
    """Time ``clicks`` clicks (two segments, alternating, each around its own "organ") on a synthetic
    512 x 512 x 141 CT; returns ms statistics."""
    from mrml_test_support import (  # Testing/slicer_module: put on sys.path by __main__ or pytest
        StubPredictor,
        affine,
        headless_scene,
        make_segmentation_node,
        make_volume_node,
        world_of_voxel,
    )

    from CTSAM3DLib import SessionConfig
    from CTSAM3DLib.mrml.session import SegmentationSession

    scene = headless_scene()
    rng = np.random.default_rng(seed)
    array = rng.normal(0.0, 60.0, SHAPE_ZYX).astype(np.int16)
    volume = make_volume_node(scene, array, affine(np.diag([-SPACING_MM[0], -SPACING_MM[1], SPACING_MM[2]]),
                                                  (250.0, 250.0, -140.0)))
    segmentation = make_segmentation_node(scene)
    start = time.perf_counter()
    session = SegmentationSession(volume, segmentation, StubPredictor(), SessionConfig(use_cpp=False))
    session_ms = 1000 * (time.perf_counter() - start)
    start = time.perf_counter()
    assert session.engine.is_volume_set  # the copy the first job makes on the worker thread
    load_ms = 1000 * (time.perf_counter() - start)
    segments = [session.add_segment(), session.add_segment()]
    centres = [(170, 200, 60), (340, 300, 80)]  # one "organ" per segment; clicks scatter around it
    times: dict[str, list[float]] = {"prepare": [], "engine": [], "commit": [], "logic": [], "total": []}
    for n in range(clicks):
        jitter = rng.integers((-60, -60, -20), (61, 61, 21))
        ijk = tuple(int(v) for v in np.add(centres[n % 2], jitter))
        point = world_of_voxel(volume, ijk)
        t0 = time.perf_counter()
        job = session.prepare_click(point, True, segments[n % 2])
        t1 = time.perf_counter()
        outcome = session.run(job)
        t2 = time.perf_counter()
        session.commit(outcome)
        t3 = time.perf_counter()
        for key, value in (("prepare", t1 - t0), ("engine", t2 - t1), ("commit", t3 - t2),
                           ("logic", (t1 - t0) + (t3 - t2)), ("total", t3 - t0)):
            times[key].append(1000 * value)
    box_voxels = int(np.prod(np.subtract(outcome.box[1], outcome.box[0])))
    stats = {key: {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90)),
                   "max_ms": float(np.max(v)), "first_clicks_ms": [round(x, 1) for x in v[:2]]}
             for key, v in times.items()}
    return {"shape_zyx": SHAPE_ZYX, "clicks": clicks, "threads": torch.get_num_threads(),
            "session_setup_ms": session_ms, "volume_copy_ms": load_ms, "last_box_voxels": box_voxels, "per_click": stats}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="CTSAM3D Slicer-logic overhead per click (stub predictor)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the target is for 2 CPU cores)")
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = benchmark_click_overhead(args.clicks)
    print(f"volume {result['shape_zyx']} (z, y, x), {result['clicks']} clicks, {result['threads']} torch threads")
    print(f"once per session: set-up on the GUI thread {result['session_setup_ms']:.0f} ms, volume node -> engine "
          f"on the worker thread {result['volume_copy_ms']:.0f} ms")
    for key, value in result["per_click"].items():
        print(f"  {key:8s} median {value['median_ms']:7.1f} ms   p90 {value['p90_ms']:7.1f} ms   "
              f"max {value['max_ms']:7.1f} ms   first click per segment {value['first_clicks_ms']} ms")
    print(f"  (last changed box: {result['last_box_voxels']} voxels)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "Testing" / "slicer_module"))  # mrml_test_support
    sys.exit(main())
