"""One real training step, measured with PyTorch, against archcalc's training estimate.

For each torchvision model, batch and optimizer: export the model in training mode (BatchNorm and
Dropout kept), estimate one step with archcalc, then run two real steps and measure the second
(optimizer state exists, gradients were freed by zero_grad): on CUDA with
torch.cuda.max_memory_allocated; on CPU in a fresh child process, as the rise of the resident
high-water mark over the second step (reset through /proc/self/clear_refs; glibc told to return
freed buffers at once with MALLOC_MMAP_THRESHOLD_) plus the bytes of the tensors alive before it.
torch, torchvision: benchmark-only (pip install torch torchvision).
Usage: python benchmarks/bench_training.py [--device cpu|cuda] [--batch 8] [--models resnet18,...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torchvision

import archcalc

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.01),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
}


def export(name: str, batch: int, folder: Path) -> Path:
    path = folder / f"{name}.onnx"
    if not path.exists():
        model = getattr(torchvision.models, name)(weights=None).train()
        torch.onnx.export(model, (torch.randn(batch, 3, 224, 224),), str(path), input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}}, opset_version=17, dynamo=False,
                          training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False)
    return path


def _live_bytes(model, opt, x) -> int:
    tensors = [*model.parameters(), *model.buffers(), x]
    tensors += [v for state in opt.state.values() for v in state.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors)


def step(model, opt, x):
    opt.zero_grad(set_to_none=True)
    model(x).float().mean().backward()
    opt.step()


def measured_peak(name: str, optimizer: str, batch: int, device: str) -> int:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).train().to(device)
    opt = OPTIMIZERS[optimizer](model.parameters())
    x = torch.randn(batch, 3, 224, 224, device=device)
    step(model, opt, x)  # the first step creates the optimizer state
    opt.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step(model, opt, x)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    base = _live_bytes(model, opt, x)
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts from here
    step(model, opt, x)
    return base + _status("VmHWM") - before


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith(key))
    return int(line.split()[1]) * 1024


def measured_in_child(name: str, optimizer: str, batch: int) -> int:
    """A CPU measurement in a fresh process, so the high-water mark is this step's alone."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import torch; "
            "torch.set_num_threads(1); import bench_training as b; "
            f"print(b.measured_peak({name!r}, {optimizer!r}, {batch}, 'cpu'))")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--models", default="resnet18,resnet50,vgg11,mobilenet_v2")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            est = archcalc.estimate(export(name, args.batch, Path(tmp)), batch=args.batch)
            for optimizer in OPTIMIZERS:
                # PyTorch's default optimizer implementation: multi-tensor on CUDA, per-tensor on CPU.
                tm = est.training_memory(optimizer, impl="foreach" if args.device == "cuda" else "single")
                real = measured_peak(name, optimizer, args.batch, "cuda") if args.device == "cuda" else \
                    measured_in_child(name, optimizer, args.batch)
                rows.append({"model": name, "optimizer": optimizer, "batch": args.batch, "device": args.device,
                             "estimate": tm.total, "measured": real, "notes_rule": tm.notes_rule,
                             "error": tm.total / real - 1, "notes_error": tm.notes_rule / real - 1})
                r = rows[-1]
                print(f"{name:13} {optimizer:8} est {r['estimate'] / 2**20:9.1f} MiB  "
                      f"real {real / 2**20:9.1f} MiB  err {r['error']:+.1%}  "
                      f"notes' rule {r['notes_error']:+.1%}", flush=True)
    errs = [abs(r["error"]) for r in rows]
    card = f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""
    print(f"median |error| {statistics.median(errs):.1%}, worst {max(errs):.1%} ({torch.__version__}, "
          f"{args.device}{card})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
