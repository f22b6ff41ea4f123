"""One visit to a GPU machine: what the runtime there offers, the CUDA context's cost, and real
training steps against archcalc's estimates. Writes $OUT/device.json; prints as it goes.
Run there from the repository root: PYTHONPATH=. python3 tools/device_check.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(os.environ.get("OUT", "."))
report: dict = {}


def section(name, fn):
    start = time.time()
    try:
        report[name] = fn()
    except Exception as exc:  # record and go on: one visit, every section matters
        report[name] = {"error": f"{type(exc).__name__}: {exc}"}
    print(name, json.dumps(report[name])[:1500], f"({time.time() - start:.0f} s)", flush=True)
    (OUT / "device.json").write_text(json.dumps(report, indent=1))


def environment():
    import onnxruntime as ort
    import pynvml
    import torch

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    mem = pynvml.nvmlDeviceGetMemoryInfo(h)
    name = pynvml.nvmlDeviceGetName(h)
    return {"gpu": name if isinstance(name, str) else name.decode(), "nvml_total": mem.total,
            "nvml_used_idle": mem.used, "driver": pynvml.nvmlSystemGetDriverVersion(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "onnxruntime": ort.__version__,
            "ort_device": ort.get_device(), "ort_providers": ort.get_available_providers(),
            "torch_mem_get_info": list(torch.cuda.mem_get_info())}


def ort_cuda_session():
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    sess = ort.InferenceSession(model.SerializeToString(),
                                providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    sess.run(None, {"x": np.ones(4, np.float32)})
    return {"session_providers": sess.get_providers(), "onnx": onnx.__version__}


CONTEXT = r"""
import json, pynvml, torch, os
pynvml.nvmlInit(); h = pynvml.nvmlDeviceGetHandleByIndex(0)
def used():
    procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
    mine = [p.usedGpuMemory for p in procs if p.pid == os.getpid()]
    return {"process": mine[0] if mine else None, "device": pynvml.nvmlDeviceGetMemoryInfo(h).used}
out = {"before": used()}
torch.cuda.init(); torch.zeros(1, device="cuda"); torch.cuda.synchronize(); out["context"] = used()
a = torch.randn(1024, 1024, device="cuda"); (a @ a).sum().item(); out["cublas"] = used()
c = torch.nn.Conv2d(64, 64, 3).cuda(); c(torch.randn(8, 64, 56, 56, device="cuda")).sum().backward()
torch.cuda.synchronize(); out["cudnn"] = used(); out["allocated"] = torch.cuda.memory_allocated()
out["reserved"] = torch.cuda.memory_reserved()
print(json.dumps(out))
"""


def cuda_context():
    res = subprocess.run([sys.executable, "-c", CONTEXT], capture_output=True, text=True, timeout=120)
    return json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else {"error": res.stderr[-500:]}


def training(batch):
    def run():
        res = subprocess.run([sys.executable, "benchmarks/bench_training.py", "--device", "cuda", "--batch",
                              str(batch), "--models", "resnet18,resnet50,vgg11,mobilenet_v2", "--json",
                              str(OUT / f"train_b{batch}.json")],
                             capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": "."})
        lines = [ln for ln in res.stdout.splitlines() if " est " in ln or "median" in ln]
        return {"rc": res.returncode, "lines": lines, "stderr": res.stderr[-800:] if res.returncode else ""}
    return run


if __name__ == "__main__":
    section("environment", environment)
    section("ort_cuda_session", ort_cuda_session)
    section("cuda_context", cuda_context)
    section("training_b32", training(32))
    section("training_b8", training(8))
