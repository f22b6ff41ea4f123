"""Shared test helpers: where the exported fixtures live and what onnxruntime measured of them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "models"
ZOO = ROOT / "zoo" / "torchvision"


def exported_models() -> list[str]:
    """Every exported model with a truth file (see tools/make_fixtures.py)."""
    return sorted(p.stem for p in FIXTURES.glob("*.json"))


def model_path(name: str) -> Path:
    for folder in (FIXTURES, ZOO):
        if (folder / f"{name}.onnx").exists():
            return folder / f"{name}.onnx"
    raise FileNotFoundError(name)


def truth(name: str) -> dict:
    """What torch and onnxruntime reported for ``name`` when it was exported."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


def input_shapes(name: str, batch: int) -> dict[str, str]:
    """The input shapes the onnxruntime run was fed at ``batch``."""
    return {k: "x".join(map(str, [batch, *v])) for k, v in truth(name)["feeds"].items()}


@pytest.fixture
def tmp_model(tmp_path):
    """Save a ModelProto to a file and return its path."""
    import onnx

    def save(model, name="model.onnx"):
        path = tmp_path / name
        onnx.save(model, str(path))
        return path

    return save


# A rule that crashes is a bug: in the tests it surfaces as the crash itself (see archcalc.errors).
os.environ["ARCHCALC_STRICT"] = "1"


def tracked_peak(step, *tracked) -> int:
    """PyTorch's MemTracker peak ("Total": every tensor the step allocates) over a second ``step``,
    after a first that makes the optimizer's state; ``tracked``: the modules and optimizers."""
    from torch.distributed._tools.mem_tracker import MemTracker

    step()
    tracker = MemTracker()
    tracker.track_external(*tracked)
    with tracker:
        step()
    snap = next(iter(tracker.get_tracker_snapshot("peak").values()))
    return next(v for k, v in snap.items() if getattr(k, "value", k) == "Total")
