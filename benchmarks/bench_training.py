"""One real training step, measured with PyTorch, against archcalc's training estimate.

For each model, batch and optimizer: export the model in training mode (BatchNorm and Dropout
kept), estimate one step with archcalc for the device's PyTorch defaults, then run two real steps
and measure the second (optimizer state exists, gradients were freed by zero_grad): on CUDA with
torch.cuda.max_memory_allocated; on CPU in a fresh child process, as the rise of the resident
high-water mark over the second step (reset through /proc/self/clear_refs; glibc told to return
freed buffers at once with MALLOC_MMAP_THRESHOLD_) plus the bytes of the tensors alive before it.
The step's rise is the peak less those tensors (weights, buffers, optimizer state, the batch).

Saved activations: one forward pass under torch.autograd.graph.saved_tensors_hooks, every tensor
autograd saves counted once per storage, parameters and buffers left out; the input batch, which
the first layer saves, is counted (archcalc: saved_activations + saved_inputs).
torch, torchvision, transformers: benchmark-only (pip install torch torchvision transformers).
Usage: python benchmarks/bench_training.py [--device cpu|cuda] [--batch 8] [--models resnet18,...]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torchvision

import archcalc

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.01),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
}
CNNS = ["vgg16", "alexnet", "googlenet", "resnet18", "resnet50", "mobilenet_v2"]
SEQUENCE = 128  # the transformer's tokens per sample


class Transformer(torch.nn.Module):
    """A small BERT (Hugging Face's BertModel from a config: 4 layers, hidden 512, 8 heads, eager
    attention, dropout 0.1, random weights) with a linear head on its token states."""

    def __init__(self):
        super().__init__()
        from transformers import BertConfig, BertModel

        cfg = BertConfig(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048,
                         vocab_size=8192, max_position_embeddings=SEQUENCE, attn_implementation="eager")
        self.bert, self.head = BertModel(cfg, add_pooling_layer=False), torch.nn.Linear(512, 2)

    def forward(self, input_ids):
        return self.head(self.bert(input_ids=input_ids).last_hidden_state)


def build(name: str, batch: int, device: str = "cpu"):
    """The model in training mode and one batch for it."""
    torch.manual_seed(0)
    if name == "transformer":
        return Transformer().train().to(device), torch.randint(0, 8192, (batch, SEQUENCE), device=device)
    kw = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    model = getattr(torchvision.models, name)(weights=None, **kw).train().to(device)
    return model, torch.randn(batch, 3, 224, 224, device=device)


def export(name: str, batch: int, folder: Path) -> Path:
    path = folder / f"{name}.onnx"
    if not path.exists():
        model, x = build(name, batch)
        # The transformer: opset 20, where GELU is one Gelu node as in PyTorch (opset 17 spells it
        # as Div, Erf, Add, Mul, Mul, each keeping its own input), and constant folding on, so each
        # Linear's weight.t() -- a view in PyTorch -- is a transposed initializer, not a Transpose node.
        tf = name == "transformer"
        axes = {"x": {0: "batch", 1: "sequence"}} if tf else {"x": {0: "batch"}}
        with warnings.catch_warnings():  # the tracer's warnings on every in-place op
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(path), input_names=["x"], dynamic_axes=axes,
                              opset_version=20 if tf else 17, dynamo=False,
                              training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=tf)
    return path


def _live_bytes(model, opt, x) -> int:
    tensors = [*model.parameters(), *model.buffers(), x]
    tensors += [v for state in opt.state.values() for v in state.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors)


def step(model, opt, x):
    opt.zero_grad(set_to_none=True)
    model(x).float().mean().backward()
    opt.step()


def measured_peak(name: str, optimizer: str, batch: int, device: str) -> tuple[int, int]:
    """(the step's peak, the tensors alive before it)."""
    peak, base, _ = measured(name, optimizer, batch, device)
    return peak, base


def measured(name: str, optimizer: str, batch: int, device: str) -> tuple[int, int, int | None]:
    """(the second step's peak, the tensors alive before it, and on CUDA what the caching allocator
    reserved over both steps from an emptied cache: torch.cuda.max_memory_reserved, the figure
    archcalc's allocator replay predicts)."""
    if device == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, x = build(name, batch, device)
    opt = OPTIMIZERS[optimizer](model.parameters())
    step(model, opt, x)  # the first step creates the optimizer state
    opt.zero_grad(set_to_none=True)
    base = _live_bytes(model, opt, x)
    if device == "cuda":
        torch.cuda.synchronize()
        reserved = torch.cuda.max_memory_reserved()
        torch.cuda.reset_peak_memory_stats()
        step(model, opt, x)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(), base, max(reserved, torch.cuda.max_memory_reserved())
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts from here
    step(model, opt, x)
    return base + _status("VmHWM") - before, base, None


def reserved_estimate(path: Path, optimizer: str, batch: int, dims) -> int:
    """archcalc's replay of PyTorch's caching allocator over the one-GPU step (plan.reserved), with
    PyTorch's default allocator (no expandable segments), tensors only."""
    from archcalc.analysis.plan.gpu_memory import Strategy
    from archcalc.analysis.plan.planner import Planner
    from archcalc.analysis.plan.reserved import replay
    from archcalc.frontends.sources import load_graph

    planner = Planner(load_graph(str(path)), optimizer, None, "cuda", "none", dims=dims)
    found = replay(planner, Strategy(), batch, expandable=False)
    assert found is not None
    return found.reserved


def measured_saved(name: str, batch: int) -> tuple[int, int]:
    """(bytes autograd saves for backward, each storage once, parameters and buffers excluded;
    the part of it that is the input batch)."""
    model, x = build(name, batch)
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in own:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(seen.values()), seen.get(x.untyped_storage().data_ptr(), 0)


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith(key))
    return int(line.split()[1]) * 1024


def measured_in_child(name: str, optimizer: str, batch: int) -> tuple[int, int]:
    """A CPU measurement in a fresh process, so the high-water mark is this step's alone."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import torch; "
            "torch.set_num_threads(1); import bench_training as b; "
            f"print(*b.measured_peak({name!r}, {optimizer!r}, {batch}, 'cpu'))")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    peak, base = map(int, out.stdout.strip().splitlines()[-1].split())
    return peak, base


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--models", default=",".join([*CNNS, "transformer"]))
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.backends.mha.set_fastpath_enabled(False)
    rows, M = [], 2 ** 20
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            dims = {"sequence": SEQUENCE} if name == "transformer" else None
            path = export(name, args.batch, Path(tmp))
            est = archcalc.estimate(path, batch=args.batch, dims=dims)
            saved, saved_x = measured_saved(name, args.batch)
            for optimizer in args.optimizers.split(","):
                # PyTorch's defaults on the device: Adam per tensor on CPU, multi-tensor on CUDA;
                # dropout keeps a mask of its input's dtype on CPU, of bools on CUDA.
                # tensors only: what max_memory_allocated and the CPU process rise measure
                tm = est.training_memory(optimizer, device=args.device, runtime="none")
                real, base, reserved = measured(name, optimizer, args.batch, "cuda") if args.device == "cuda" \
                    else (*measured_in_child(name, optimizer, args.batch), None)
                resident = tm.weights + tm.master_weights + tm.optimizer_state + tm.inputs
                est_saved = tm.saved_activations + tm.saved_inputs
                rows.append({"model": name, "optimizer": optimizer, "batch": args.batch, "device": args.device,
                             "estimate": tm.total, "measured": real, "error": tm.total / real - 1,
                             "estimate_rise": tm.total - resident, "measured_rise": real - base,
                             "rise_error": (tm.total - resident) / (real - base) - 1,
                             "resident_estimate": resident, "resident_measured": base, "phase": tm.peak.phase,
                             "saved_estimate": est_saved, "saved_measured": saved,
                             "saved_error": est_saved / saved - 1,
                             "saved_inputs_estimate": tm.saved_inputs, "saved_inputs_measured": saved_x,
                             "notes_rule": tm.notes_rule, "notes_error": tm.notes_rule / real - 1})
                if reserved:  # CUDA: the allocator's reserve beside archcalc's replay of it
                    guess = reserved_estimate(path, optimizer, args.batch, dims)
                    rows[-1] |= {"reserved_estimate": guess, "reserved_measured": reserved,
                                 "reserved_error": guess / reserved - 1}
                r = rows[-1]
                print(f"{name:12} {optimizer:8} peak {tm.total / M:8.1f} / {real / M:8.1f} MiB "
                      f"{r['error']:+6.1%}  rise {r['estimate_rise'] / M:7.1f} / {r['measured_rise'] / M:7.1f} "
                      f"{r['rise_error']:+6.1%}  saved {est_saved / M:7.2f} / {saved / M:7.2f} "
                      f"{r['saved_error']:+6.1%}  ({tm.peak.phase})", flush=True)
    card = f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""
    for label, keep in (("all", lambda r: True), ("CNNs", lambda r: r["model"] in CNNS)):
        sel = [r for r in rows if keep(r)]
        if not sel:
            continue
        print(f"{label}: " + "; ".join(
            f"{key} median |error| {statistics.median(abs(r[key]) for r in sel):.1%}, "
            f"worst {max(abs(r[key]) for r in sel):.1%}" for key in ("error", "rise_error", "saved_error")))
    print(f"({torch.__version__}, {args.device}{card}, batch {args.batch}, {torch.get_num_threads()} thread(s))")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
