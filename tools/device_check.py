"""One visit to a GPU machine, every check in one script: what the runtimes there offer, the CUDA
context's cost, real PyTorch training steps against archcalc's training estimate (and
torch.cuda.max_memory_reserved against archcalc's replay of the caching allocator), and
`archcalc validate` (CUDA channel included when onnxruntime can use the GPU) on the zoo's
torchvision and transformer exports refilled with random weights. Sections run in order of
value and stop being started once --budget seconds have passed; each writes to $OUT as it ends.
Run there from the repository root: PYTHONPATH=. python3 tools/device_check.py --budget 420
The GPU image's onnxruntime (1.30) is a CPU-only build: for the CUDA channel, carry onnxruntime-gpu
(the cp312 wheel, unpacked, tar.xz, split under the 64 MiB a call allows, one chunk per call while
the machine stays warm), unpack it to /tmp/site and put /tmp/site first on PYTHONPATH; CUDA and
cuDNN come from the image's nvidia-* packages through onnxruntime.preload_dlls.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(os.environ.get("OUT", "."))
ROOT = Path(__file__).resolve().parent.parent
report: dict = {}
START = time.time()


def section(name, fn):
    start = time.time()
    try:
        report[name] = fn()
    except Exception as exc:  # record and go on: one visit, every section matters
        report[name] = {"error": f"{type(exc).__name__}: {exc}"}
    print(f"== {name} ({time.time() - start:.0f} s, {time.time() - START:.0f} s in)", flush=True)
    print(json.dumps(report[name])[:1500], flush=True)
    (OUT / "device.json").write_text(json.dumps(report, indent=1))


def environment():
    import onnxruntime as ort
    import pynvml
    import torch

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    mem = pynvml.nvmlDeviceGetMemoryInfo(h)
    name = pynvml.nvmlDeviceGetName(h)
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"],
                         capture_output=True, text=True)
    return {"gpu": name if isinstance(name, str) else name.decode(), "nvml_total": mem.total,
            "nvml_used_idle": mem.used, "driver": pynvml.nvmlSystemGetDriverVersion(), "smi": smi.stdout,
            "torch": torch.__version__, "cuda": torch.version.cuda, "onnxruntime": ort.__version__,
            "ort_device": ort.get_device(), "ort_providers": ort.get_available_providers(),
            "cpus": os.cpu_count()}


def ort_cuda_session():
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from archcalc.measure.cuda import cuda_usable, providers

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    sess = ort.InferenceSession(model.SerializeToString(), providers=providers())
    sess.run(None, {"x": np.ones(4, np.float32)})
    return {"cuda_usable": cuda_usable(), "session_providers": sess.get_providers()}


CONTEXT = r"""
import json, pynvml, torch, os
pynvml.nvmlInit(); h = pynvml.nvmlDeviceGetHandleByIndex(0)
def used():
    procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
    mine = [p.usedGpuMemory for p in procs if p.pid == os.getpid()]
    return {"process": mine[0] if mine else None, "device": pynvml.nvmlDeviceGetMemoryInfo(h).used}
out = {"before": used()}
torch.zeros(1, device="cuda"); torch.cuda.synchronize(); out["context"] = used()
a = torch.randn(1024, 1024, device="cuda"); (a @ a).sum().item(); out["cublas"] = used()
c = torch.nn.Conv2d(64, 64, 3).cuda(); c(torch.randn(8, 64, 56, 56, device="cuda")).sum().backward()
torch.cuda.synchronize(); out["cudnn"] = used(); out["allocated"] = torch.cuda.memory_allocated()
out["reserved"] = torch.cuda.memory_reserved()
print(json.dumps(out))
"""


def cuda_context():
    res = subprocess.run([sys.executable, "-c", CONTEXT], capture_output=True, text=True, timeout=120)
    return json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else {"error": res.stderr[-800:]}


def _env() -> dict:
    """The environment for a child: this checkout on the path, after whatever is there (carried wheels)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), "."]))}


def training(batch, models):
    def run():
        res = subprocess.run([sys.executable, "benchmarks/bench_training.py", "--device", "cuda", "--batch",
                              str(batch), "--models", models, "--json", str(OUT / f"train_b{batch}.json")],
                             capture_output=True, text=True, timeout=300, env=_env())
        lines = [ln for ln in res.stdout.splitlines() if " est " in ln or "median" in ln]
        return {"rc": res.returncode, "lines": lines, "stderr": res.stderr[-800:] if res.returncode else ""}
    return run


def validate(name, batch, level="disable"):
    dims = ["--dim", "sequence=128"] if name in ("bert_base", "gpt2_dynamo") else []

    def run():
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from models import refilled

        src = ROOT / "zoo" / "torchvision" / f"{name}.onnx"
        if not src.exists():
            src = ROOT / "tests" / "fixtures" / "models" / f"{name}.onnx"
        model = refilled(src, Path("/tmp") / f"full_{name}.onnx")
        out = OUT / f"validate_{name}_b{batch}.json"
        res = subprocess.run([sys.executable, "-m", "archcalc.cli", "validate", str(model), "--batch", str(batch),
                              "--opt-level", level, "--format", "json", "--quiet", *dims],
                             capture_output=True, text=True, timeout=400, env=_env())
        if res.returncode not in (0, 1):
            return {"rc": res.returncode, "stderr": res.stderr[-1200:]}
        out.write_text(res.stdout)
        data = json.loads(res.stdout)
        return {"rc": res.returncode, "provider": data["provider"], "shapes": data["shapes"]["checked"],
                "mismatches": len(data["shapes"]["mismatches"]),
                "compared": [(c["channel"], c["estimate"], c["measured"], c["error"]) for c in data["compared"]],
                "cuda": data["measured"]["cuda"]}
    return run


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=420, help="start no section after this many seconds")
    ap.add_argument("--only", default="", help="run only sections whose names start with one of these (a,b)")
    args = ap.parse_args()
    plan = [("environment", environment), ("ort_cuda_session", ort_cuda_session), ("cuda_context", cuda_context),
            ("training_b32", training(32, "resnet18,resnet50,vgg11,mobilenet_v2"))]
    plan += [(f"validate_{m}_b{b}", validate(m, b)) for m, b in [
        ("resnet50", 8), ("mobilenet_v2", 8), ("bert_base", 8), ("efficientnet_b0", 8), ("resnet50", 1),
        ("vgg16", 8), ("gpt2_dynamo", 8), ("googlenet", 8), ("vit_b_16", 8), ("mobilenet_v2", 1)]]
    plan += [("training_b8", training(8, "resnet18,resnet50,vgg11,mobilenet_v2"))]
    only = tuple(p for p in args.only.split(",") if p)
    for name, fn in plan:
        if only and not name.startswith(only):
            continue
        if time.time() - START > args.budget:
            print(f"== {name}: skipped, budget spent", flush=True)
            continue
        section(name, fn)
