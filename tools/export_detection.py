"""Export torchvision's detection models to ONNX and record what onnxruntime executes of them.

Needs torch, torchvision, onnx and onnxruntime (not archcalc's dependencies). Pretrained weights
are not used: each model is built with weights=None, weights_backbone=None after
torch.manual_seed(0), in eval mode, with its score threshold at 0.0 so that even random weights
give detections (nonzero counts, so the data-dependent paths run with real sizes).

For each model it writes:
  OUT_DIR/NAME.onnx                   the TorchScript-exporter (dynamo=False) export, one image
                                      [x] of 3xHxW, H and W dynamic;
  tests/detection/NAME.json           the truth: the feeds, onnxruntime's executed shape and
                                      dtype of every main-graph node output (at two image sizes),
                                      weight/parameter counts, op counts, opset, sha256, settings.
Usage: python tools/export_detection.py [--only NAME] [OUT_DIR]   (default /work/corpus/detection)
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # archcalc, run from a checkout
from archcalc.measure.validate import every_output  # noqa: E402  (exposes outputs; estimates nothing)

ROOT = Path(__file__).resolve().parent.parent
TRUTH = ROOT / "tests" / "detection"

# name -> the constructor keywords beyond weights=None, weights_backbone=None
MODELS = {
    "fasterrcnn_resnet50_fpn": {"box_score_thresh": 0.0},
    "maskrcnn_resnet50_fpn": {"box_score_thresh": 0.0},
    "keypointrcnn_resnet50_fpn": {"box_score_thresh": 0.0},
    "retinanet_resnet50_fpn": {"score_thresh": 0.0},
    "fcos_resnet50_fpn": {"score_thresh": 0.0},
    "ssd300_vgg16": {"score_thresh": 0.0},
    "ssdlite320_mobilenet_v3_large": {"score_thresh": 0.0},
}
SIZES = ((480, 640), (600, 400))  # export/first run size, second run size (H, W)
OPSETS = (17, 16, 11)  # tried in order
DATA_DEPENDENT = ("NonZero", "NonMaxSuppression", "TopK", "Unique", "Compress", "RoiAlign",
                  "Loop", "If", "Scan")
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
               onnx.TensorProto.BFLOAT16}


def build(name):
    torch.manual_seed(0)
    kw = MODELS[name]
    model = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None, **kw)
    return model.eval(), kw


def image(h, w, seed=0):
    """A smooth random image in [0, 1): coarse noise upsampled bilinearly, deterministic."""
    coarse = np.random.default_rng(seed).random((1, 3, h // 16 + 2, w // 16 + 2), dtype=np.float32)
    up = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(h, w), mode="bilinear",
                                         align_corners=False)
    return up[0].clamp(0, 0.999).numpy()


def export(model, path):
    x = torch.from_numpy(image(*SIZES[0]))
    with torch.no_grad():
        model([x])  # warm up (also checks the model runs)
    errors = []
    for opset in OPSETS:
        try:
            t0 = time.perf_counter()
            torch.onnx.export(model, ([x],), str(path), dynamo=False, opset_version=opset,
                              input_names=["images"], do_constant_folding=True,
                              dynamic_axes={"images": {1: "height", 2: "width"}})
            return opset, time.perf_counter() - t0, errors
        except Exception as e:  # noqa: BLE001 - record and try the next opset
            errors.append(f"opset {opset}: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
    raise RuntimeError("; ".join(errors))


def weights(graph, seen):
    """Elements of float initializers and of float Constant-node tensors with more than 1 element,
    each name counted once: (initializer elements, Constant elements)."""
    counts = [0, 0]
    tensors = [(0, t.name, t) for t in graph.initializer]
    tensors += [(1, n.output[0], a.t) for n in graph.node if n.op_type == "Constant"
                for a in n.attribute if a.name == "value"]
    for kind, name, t in tensors:
        n = int(np.prod(t.dims)) if t.dims else 1
        if t.data_type in FLOAT_TYPES and n > 1 and name not in seen:
            seen.add(name)
            counts[kind] += n
    return counts


def subgraphs(graph):
    for n in graph.node:
        for a in n.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                yield g
                yield from subgraphs(g)


def run_ort(proto, feed):
    """Run with every main-graph node output appended as a graph output; optimizations off."""
    m = every_output(proto)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 2
    t0 = time.perf_counter()
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, feed)
    seconds = time.perf_counter() - t0
    result = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in zip(names, values)}
    finals = {o.name: list(result[o.name]["shape"]) for o in proto.graph.output}
    return result, finals, seconds


def truth(name, model, kw, path, opset, export_s, errors):
    proto = onnx.load(str(path))
    data = path.read_bytes()
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    sub_ops = collections.Counter(n.op_type for g in subgraphs(proto.graph) for n in g.node)
    seen = set()
    main_w = weights(proto.graph, seen)
    sub_w = [weights(g, seen) for g in subgraphs(proto.graph)]
    all_w = [main_w[k] + sum(w[k] for w in sub_w) for k in (0, 1)]
    inp = proto.graph.input[0].name
    runs = []
    for h, w in SIZES:
        x = image(h, w)
        result, finals, seconds = run_ort(proto, {inp: x})
        runs.append({"feeds": {inp: {"shape": [3, h, w], "dtype": "float32",
                                     "fill": "smooth random in [0,1), default_rng(0)"}},
                     "ort": result, "graph_outputs": finals, "ort_seconds": round(seconds, 2)})
    return {
        "model": name,
        "feeds": runs[0]["feeds"],
        "ort": runs[0]["ort"],
        "graph_outputs": runs[0]["graph_outputs"],
        "ort_seconds": runs[0]["ort_seconds"],
        "second_run": runs[1],
        "weights": sum(all_w),
        "weights_initializers": all_w[0],
        "weights_constant_nodes": all_w[1],
        "weights_main_graph": sum(main_w),
        "torch_params": sum(p.numel() for p in model.parameters()),
        "torch_buffers": sum(b.numel() for b in model.buffers()),
        "ops": dict(sorted(ops.items())),
        "subgraph_ops": dict(sorted(sub_ops.items())),
        "nodes": len(proto.graph.node),
        "data_dependent_ops": sorted({o for o in DATA_DEPENDENT if o in ops or o in sub_ops}),
        "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "export_settings": {
            "constructor": {"weights": None, "weights_backbone": None, **kw},
            "seed": "torch.manual_seed(0) before construction", "mode": "eval",
            "exporter": f"torch.onnx.export(dynamo=False), torch {torch.__version__}, "
                        f"torchvision {torchvision.__version__}",
            "opset_version": opset, "opset_errors": errors, "do_constant_folding": True,
            "args": f"([x],), x float32 3x{SIZES[0][0]}x{SIZES[0][1]}",
            "input_names": ["images"], "dynamic_axes": {"images": {"1": "height", "2": "width"}},
            "export_seconds": round(export_s, 2),
        },
        "onnxruntime": ort.__version__,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("out", nargs="?", default="/work/corpus/detection")
    ap.add_argument("--only", choices=sorted(MODELS), action="append")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    TRUTH.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    for name in args.only or MODELS:
        model, kw = build(name)
        path = out / f"{name}.onnx"
        opset, export_s, errors = export(model, path)
        t = truth(name, model, kw, path, opset, export_s, errors)
        (TRUTH / f"{name}.json").write_text(json.dumps(t, indent=1) + "\n")
        print(f"{name}: opset {opset}, {t['bytes']} bytes, {t['nodes']} nodes, "
              f"{len(t['ort'])} tensors, export {export_s:.1f}s, "
              f"ort {t['ort_seconds']}s + {t['second_run']['ort_seconds']}s, "
              f"data-dependent {t['data_dependent_ops']}", flush=True)


if __name__ == "__main__":
    main()
