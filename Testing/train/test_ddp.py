"""DDP smoke test: two CPU processes (gloo) under torchrun train a tiny config for 2 steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from CTSAM3DLib.model.checkpoint import load_network
from CTSAM3DLib.train.config import TrainConfig

HERE = Path(__file__).resolve().parent
ENTRY = """
import sys
sys.path.insert(0, {here!r})
from _tiny import register_tiny
register_tiny()
from CTSAM3DLib.cli.train import main
sys.exit(main(sys.argv[1:]))
"""


def test_two_process_gloo_run(tiny_variant: str, synthetic_data: Path, tmp_path: Path) -> None:
    script = tmp_path / "entry.py"
    script.write_text(ENTRY.format(here=str(HERE)))
    cfg = TrainConfig(variant=tiny_variant, steps=2, batch_size=1, rounds=2, warmup_steps=1, log_every=1,
                      checkpoint_every=0, threads=1)
    config = tmp_path / "ddp.yaml"
    config.write_text(cfg.to_yaml())
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), str(HERE)])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           "--config", str(config), "--data", str(synthetic_data), "--output", str(out), "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(r["samples_per_s"] > 0 for r in records)
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["step"] == 2
    _, variant, _, info = load_network(out / "model.pt")
    assert variant == "tiny_test" and info["provenance"]["hardware"]["processes"] == 2
    assert proc.stdout.count("Final checkpoint") == 1  # only rank 0 reports
