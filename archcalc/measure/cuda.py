"""The CUDA channel of validation: GPU memory of a run, read from NVML in a fresh child process.

The child builds a session on CUDAExecutionProvider with an arena that grows by exactly what is
asked (``kSameAsRequested``) and heuristic cuDNN algorithm choice (an exhaustive search allocates
trial workspaces), and reads NVML's figure for its own process (the device total where the driver
hides per-process figures, e.g. in a container's PID namespace):
- context: after a one-node Identity model has run -- the CUDA context and the library handles;
- weights: the rise while the real model's session is built;
- run peak: the highest figure polled while the model runs, above where it stood after loading.
The card, driver and library versions go beside every figure.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from archcalc.measure.child import run_child

CUDA_OPTIONS = {"arena_extend_strategy": "kSameAsRequested", "cudnn_conv_algo_search": "HEURISTIC"}


def cuda_usable() -> bool:
    """Whether onnxruntime can run on a GPU here. onnxruntime-gpu lists CUDA as available on any
    machine; a device node must exist too (and the session then reports what it really used)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    return Path("/dev/nvidia0").exists() or os.environ.get("CUDA_VISIBLE_DEVICES", "") not in ("", "-1")


def providers(cpu_only: bool = False) -> list:
    """The providers for a session: CUDA first when usable, CPU always as the fallback."""
    if cpu_only or not cuda_usable():
        return ["CPUExecutionProvider"]
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):  # CUDA and cuDNN from pip's nvidia packages, when installed that way
        with contextlib.suppress(Exception):  # the system's libraries may serve; the session says what it used
            ort.preload_dlls()
    return [("CUDAExecutionProvider", CUDA_OPTIONS), "CPUExecutionProvider"]


@dataclass(frozen=True)
class CudaPeak:
    """GPU memory measured by NVML over one run (bytes), and where it was measured."""

    level: str
    provider: str  # the provider the session really used
    context: int  # CUDA context and library handles (the identity model's session)
    weights: int  # the rise while the model's session was built
    run_peak: int  # the highest rise over a run, above the figure after loading
    total: int  # the highest figure of the process, context included
    source: str  # "process" (NVML's per-process figure) or "device" (the card's used memory)
    card: str
    driver: str
    versions: str
    runs: list[int]


CHILD = r"""
import json, os, sys, threading, time
import numpy as np, onnx, onnxruntime as ort, pynvml
from onnx import TensorProto, helper
model, feeds, level, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
pynvml.nvmlInit()
handle = pynvml.nvmlDeviceGetHandleByIndex(int(os.environ.get("ARCHCALC_NVML_INDEX", "0")))
pid = os.getpid()
def mine():
    for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
        if p.pid == pid and p.usedGpuMemory is not None:
            return p.usedGpuMemory
    return None
device_base = pynvml.nvmlDeviceGetMemoryInfo(handle).used
def used():
    own = mine()
    if own is not None:
        return own, "process"
    return pynvml.nvmlDeviceGetMemoryInfo(handle).used - device_base, "device"
if hasattr(ort, "preload_dlls"):
    try: ort.preload_dlls()
    except Exception: pass
providers = [("CUDAExecutionProvider", json.loads(os.environ["ARCHCALC_CUDA_OPTIONS"])), "CPUExecutionProvider"]
opts = ort.SessionOptions()
opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level); opts.log_severity_level = 3
g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
ident = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
s0 = ort.InferenceSession(ident.SerializeToString(), opts, providers=providers)
s0.run(None, {"x": np.ones(1, np.float32)})
context, source = used()
inputs = dict(np.load(feeds))
sess = ort.InferenceSession(model, opts, providers=providers)
after_load = used()[0]
high, stop = [after_load], threading.Event()
def poll():
    while not stop.is_set():
        high[0] = max(high[0], used()[0]); time.sleep(0.0005)
rises = []
for _ in range(runs):
    high[0] = used()[0]; stop.clear(); t = threading.Thread(target=poll); t.start()
    sess.run(None, inputs)
    stop.set(); t.join(); high[0] = max(high[0], used()[0])
    rises.append(high[0] - after_load)
name = pynvml.nvmlDeviceGetName(handle)
print(json.dumps({"provider": sess.get_providers()[0], "context": context, "weights": after_load - context,
                  "runs": rises, "total": after_load + max(rises), "source": source,
                  "card": name if isinstance(name, str) else name.decode(),
                  "driver": str(pynvml.nvmlSystemGetDriverVersion()),
                  "versions": f"onnxruntime {ort.__version__}, onnx {onnx.__version__}"}))
"""


def cuda_peak(model_path: Path, inputs: dict, level: str, runs: int = 3) -> CudaPeak | None:
    """GPU memory of running ``model_path`` on CUDA, or None where no usable GPU or NVML is here."""
    if not cuda_usable():
        return None
    try:
        import pynvml  # noqa: F401  (nvidia-ml-py)
    except ImportError:
        return None
    data = run_child(CHILD, model_path, inputs, level, runs, {"ARCHCALC_CUDA_OPTIONS": json.dumps(CUDA_OPTIONS)},
                     "CUDA measurement")
    return CudaPeak(level, data["provider"], data["context"], data["weights"], max(data["runs"]), data["total"],
                    data["source"], data["card"], data["driver"], data["versions"], data["runs"])
