"""archcalc's estimate against its peers on models of growing size, measured in one run.

Each measurement runs in a fresh child process (so peak resident memory is that tool's own), five
times; the table shows medians. Peers: onnx-tool's model_profile, and onnx.load followed by
onnx.shape_inference.infer_shapes(data_prop=True). They are benchmark-only dependencies:
    pip install -e '.[bench]'
Usage: python benchmarks/bench_estimate.py [--reps 5] [--quick]
Writes benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import models  # noqa: E402

CACHE = Path(tempfile.gettempdir()) / "archcalc-bench"

# Each child prints {"seconds": work time, "peak_kb": VmHWM}; the work is timed inside the child,
# after imports, so interpreter start-up is not charged to any tool.
CHILD = r"""
import json, sys, time
path, dims = sys.argv[2], json.loads(sys.argv[3])
tool = sys.argv[1]
if tool == "archcalc":
    import archcalc, archcalc.analysis.estimate, archcalc.frontends.onnx_import  # imports are not the work
    start = time.perf_counter()
    archcalc.estimate(path, dims=dims.get("dims"), batch=1)
elif tool == "onnx-tool":
    import onnx_tool, io, contextlib, numpy as np
    feeds = {k: (np.zeros(v, np.int64) if k in ("ids", "input_ids", "attention_mask") else np.zeros(v, np.float32))
             for k, v in dims["shapes"].items()}
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        onnx_tool.model_profile(path, dynamic_shapes=feeds)
elif tool == "onnx":
    import onnx
    from onnx import shape_inference
    start = time.perf_counter()
    m = onnx.load(path)
    shape_inference.infer_shapes(m, data_prop=True)
elapsed = time.perf_counter() - start
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": elapsed, "peak_kb": hwm}))
"""


def in_child(tool: str, path: Path, dims: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, tool, str(path), json.dumps(dims)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:80]}
    return json.loads(out.stdout.strip().splitlines()[-1])


# Runs the CLI and reports its own VmHWM on stderr: the rusage a parent reads through wait4 carries
# the high-water mark the child inherited from this (large) benchmark process.
LAUNCHER = r"""
import runpy, sys
sys.argv = ["archcalc", *sys.argv[1:]]
try:
    runpy.run_module("archcalc.cli", run_name="__main__")
finally:
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print(f"VmHWM {hwm}", file=sys.stderr)
"""


def cli_process(path: Path, dims: dict) -> dict:
    """The whole `archcalc estimate` command as a user runs it: start-up, imports, work, output."""
    args = [a for k, v in dims.get("dims", {}).items() for a in ("--dim", f"{k}={v}")]
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", LAUNCHER, "estimate", str(path), "--format", "json", *args],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[0][:80]}
    return {"seconds": seconds, "peak_kb": int(out.stderr.split("VmHWM")[-1])}


def median_of(fn, reps: int) -> dict:
    runs = [fn() for _ in range(reps)]
    if any("error" in r for r in runs):
        return next(r for r in runs if "error" in r)
    return {"seconds": statistics.median(r["seconds"] for r in runs),
            "peak_kb": statistics.median(r["peak_kb"] for r in runs)}


def bench_models(quick: bool) -> list[tuple[str, Path, dict]]:
    CACHE.mkdir(exist_ok=True)
    zoo = models.ROOT / "zoo" / "torchvision"
    fixtures = models.ROOT / "tests" / "fixtures" / "models"
    image = {"shapes": {"x": (1, 3, 224, 224)}}
    seq = {"dims": {"sequence": 128}, "shapes": {"input_ids": (1, 128), "attention_mask": (1, 128)}}
    out = [
        ("ResNet-50", models.refilled(zoo / "resnet50.onnx", CACHE / "resnet50.onnx"), image),
        ("VGG-16", models.refilled(zoo / "vgg16.onnx", CACHE / "vgg16.onnx"), image),
        ("BERT-base", models.refilled(fixtures / "bert_base.onnx", CACHE / "bert_base.onnx"), seq),
    ]
    for layers in (2, 6) if quick else (6, 12, 24):
        path = models.decoder(CACHE / f"decoder{layers}.onnx", layers)
        out.append((f"decoder x{layers}", path, {"dims": {"sequence": 128},
                                                   "shapes": {"ids": (1, 128)}}))
    for n in (1000, 5000) if quick else (1000, 5000, 20000):
        out.append((f"chain {n} nodes", models.chain(CACHE / f"chain{n}.onnx", n), {"shapes": {"x": (1, 64)}}))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller models, for a smoke run")
    args = ap.parse_args()
    rows = []
    for label, path, dims in bench_models(args.quick):
        mb = path.stat().st_size / 1e6
        res = {
            "archcalc": median_of(lambda p=path, d=dims: in_child("archcalc", p, d), args.reps),
            "archcalc CLI": median_of(lambda p=path, d=dims: cli_process(p, d), args.reps),
            "onnx-tool": median_of(lambda p=path, d=dims: in_child("onnx-tool", p, d), args.reps),
            "onnx load+infer": median_of(lambda p=path, d=dims: in_child("onnx", p, d), args.reps),
        }
        rows.append((label, mb, res))
        print(label, f"{mb:.0f} MB", {k: v.get("seconds", v.get("error")) for k, v in res.items()}, flush=True)
    write_results(rows, args.reps)


def _cell(r: dict) -> str:
    if "error" in r:
        return f"failed: {r['error']}"
    return f"{r['seconds'] * 1000:.0f} ms, {r['peak_kb'] / 1024:.0f} MiB"


def _ratio(peer: dict, ours: dict) -> str:
    if "error" in peer or "error" in ours:
        return "-"
    return f"{peer['seconds'] / ours['seconds']:.1f}x"


def write_results(rows, reps):
    head = ("| model | file | archcalc (in-process) | archcalc CLI (whole process) | onnx-tool profile | "
            "onnx load + infer_shapes | onnx-tool / archcalc | onnx / archcalc |\n"
            "|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {label} | {mb:.0f} MB | {_cell(r['archcalc'])} | {_cell(r['archcalc CLI'])} | "
        f"{_cell(r['onnx-tool'])} | {_cell(r['onnx load+infer'])} | {_ratio(r['onnx-tool'], r['archcalc'])} | "
        f"{_ratio(r['onnx load+infer'], r['archcalc'])} |\n" for label, mb, r in rows)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"Python {platform.python_version()}")
    text = (f"# Benchmark: estimate time and peak memory\n\nMachine: {machine}. Median of {reps} runs, each in a "
            f"fresh process; time is the work after imports (the CLI column: the whole command), memory is the "
            f"process's peak resident set (VmHWM).\n\n{head}{body}")
    (HERE / "RESULTS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
