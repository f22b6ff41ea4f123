"""One runner for every measurement made in a fresh child process: the process peak (a child
starts with its own high-water mark) and the CUDA channel (a child owns its CUDA context).

Each child script takes the model, the inputs (an .npz), onnxruntime's optimization level and the
number of runs, and prints one JSON line last."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from archcalc.errors import ValidationError

# archcalc's names for onnxruntime's graph-optimization levels
LEVELS = {"disable": "ORT_DISABLE_ALL", "all": "ORT_ENABLE_ALL"}


def run_child(script: str, model_path: Path, inputs: dict, level: str, runs: int, env: dict[str, str],
              what: str) -> dict:
    """Run ``script`` in a fresh Python on ``model_path`` and return the JSON it printed last;
    a failure is a ValidationError that says ``what`` failed and why."""
    with tempfile.TemporaryDirectory() as tmp:
        feeds_path = Path(tmp) / "feeds.npz"
        np.savez(feeds_path, **inputs)
        res = subprocess.run([sys.executable, "-c", script, str(model_path), str(feeds_path), LEVELS[level],
                              str(runs)], capture_output=True, text=True, env={**os.environ, **env})
    if res.returncode < 0 or res.returncode == 137:
        raise ValidationError(f"{model_path}: the {what} was killed (signal {-res.returncode}): "
                              "out of memory? try a smaller --batch")
    if res.returncode:
        tail = (res.stderr.strip().splitlines() or ["no message"])[-1][:200]
        raise ValidationError(f"{model_path}: the {what} failed: {tail}")
    return json.loads(res.stdout.strip().splitlines()[-1])
