"""Export real models with PyTorch and record what onnxruntime measures of them, as test fixtures.

Needs torch, torchvision, transformers and onnxruntime (not archcalc's dependencies). For each model
it writes, under tests/fixtures/models/:
  NAME.onnx  (in zoo/torchvision/ for eval-mode torchvision models) the exported graph with every
             weight over 64 elements stripped to an external-data reference to a file that does
             not exist (archcalc never opens external data), so the fixture is small and the
             weights' absence proves they are not read;
  NAME.json  the independent truths the tests check against: every tensor's shape and dtype as
             onnxruntime executed it, at two batch sizes; the parameter and buffer counts that
             torch reports for the module; the inputs the run was fed.
Usage: python tools/make_fixtures.py [NAME ...]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # archcalc, run from a checkout
from archcalc.measure.validate import every_output  # noqa: E402  (exposes outputs; estimates nothing)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "models"
ZOO = ROOT / "zoo" / "torchvision"  # the eval-mode torchvision exports double as zoo models
BATCHES = (1, 8)


def _torchvision(name, train=False, **kw):
    import torchvision

    model = getattr(torchvision.models, name)(weights=None, **kw)
    return model.train() if train else model.eval()


def _cnn(name, train=False, size=224, **kw):
    def make():
        model = _torchvision(name, train, **kw)
        x = torch.randn(2, 3, size, size)
        return model, (x,), ["x"], {"x": {0: "batch"}}, {"x": ("float", (3, size, size))}
    return make


class _Outputs(torch.nn.Module):
    """Call a Hugging Face model by keyword and return one tensor, as exporters need."""

    def __init__(self, model, field):
        super().__init__()
        self.model, self.field = model, field

    def forward(self, input_ids, attention_mask=None):
        extra = {} if attention_mask is None else {"attention_mask": attention_mask}
        return getattr(self.model(input_ids=input_ids, **extra), self.field)


def _bert():
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig()).eval()  # bert-base: 12 layers, hidden 768, random weights
    ids = torch.randint(0, 30522, (2, 128))
    mask = torch.ones(2, 128, dtype=torch.int64)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    feeds = {"input_ids": ("ids", (128,)), "attention_mask": ("ones", (128,))}
    names = ["input_ids", "attention_mask"]
    return _Outputs(model, "last_hidden_state"), (ids, mask), names, axes, feeds


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(use_cache=False)).eval()  # gpt2 (124M), tied lm_head
    with torch.no_grad():  # distinct values everywhere, so the exporter merges no equal constants
        for p in model.parameters():  # the tied embedding is one parameter: it stays tied
            p.normal_(0.0, 0.02)
    ids = torch.randint(0, 50257, (2, 64))
    return _Outputs(model, "logits"), (ids,), ["input_ids"], {
        "input_ids": {0: "batch", 1: "sequence"}}, {
        "input_ids": ("ids", (64,))}


MODELS = {
    "alexnet": _cnn("alexnet"),
    "alexnet_train": _cnn("alexnet", train=True),
    "vgg16": _cnn("vgg16"),
    "vgg16_train": _cnn("vgg16", train=True),
    "resnet50": _cnn("resnet50"),
    "resnet50_train": _cnn("resnet50", train=True),
    "mobilenet_v2": _cnn("mobilenet_v2"),
    "mobilenet_v2_train": _cnn("mobilenet_v2", train=True),
    "efficientnet_b0": _cnn("efficientnet_b0"),
    "googlenet": _cnn("googlenet", aux_logits=False, init_weights=True),
    "squeezenet1_0": _cnn("squeezenet1_0"),
    "vit_b_16": _cnn("vit_b_16"),
    "bert_base": _bert,
    "gpt2": _gpt2,
}
TORCHVISION_ZOO = {"alexnet", "vgg16", "resnet50", "mobilenet_v2", "efficientnet_b0", "googlenet",
                   "squeezenet1_0", "vit_b_16"}
# GPT-2 goes through the dynamo exporter only: the TorchScript one has no aten::diff.
DYNAMO = ["resnet50_dynamo", "bert_base_dynamo", "gpt2_dynamo"]
DEFAULT = [n for n in MODELS if n != "gpt2"] + DYNAMO


def export(name, path: Path):
    model, args, input_names, axes, feeds = MODELS[name.removesuffix("_dynamo")]()
    training = torch.onnx.TrainingMode.TRAINING if model.training else torch.onnx.TrainingMode.EVAL
    torch.backends.mha.set_fastpath_enabled(False)  # the fused MHA kernel has no ONNX export
    with torch.no_grad():
        if name.endswith("_dynamo"):  # the newer exporter: opset 18+, symbolic dims, no shape chains
            torch.onnx.export(model, args, str(path), input_names=input_names, dynamic_axes=axes,
                              dynamo=True, external_data=False)
        else:
            torch.onnx.export(model, args, str(path), input_names=input_names, dynamic_axes=axes,
                              opset_version=17, training=training,
                              do_constant_folding=not model.training, dynamo=False)
    counts = {"params": sum(p.numel() for p in model.parameters()),
              "buffers": sum(b.numel() for n, b in model.named_buffers() if "num_batches" not in n)}
    return counts, feeds


def _feed(kind, shape, batch, dtype):
    full = (batch, *shape)
    if kind == "ids":
        return np.random.randint(0, 1000, full).astype(np.int64)
    if kind == "ones":
        return np.ones(full, np.int64)
    return np.random.randn(*full).astype(np.float32)


def ort_shapes(path: Path, feeds, batch):
    """Every tensor's executed shape and dtype, by exposing all of them as graph outputs."""
    model = every_output(onnx.load(str(path)))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    inputs = {n: _feed(k, s, batch, None) for n, (k, s) in feeds.items()}
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, inputs)
    return {n: {"shape": list(v.shape), "dtype": str(v.dtype)} for n, v in zip(names, values)}


def strip_weights(path: Path, out: Path):
    """Replace every initializer over 64 elements by a reference to a missing external file."""
    model = onnx.load(str(path))
    offset = 0
    for t in model.graph.initializer:
        if np.prod(t.dims, dtype=np.int64) <= 64:
            continue
        size = len(onnx.numpy_helper.to_array(t).tobytes())
        t.ClearField("raw_data")
        for f in ("float_data", "int32_data", "int64_data", "double_data"):
            t.ClearField(f)
        t.data_location = onnx.TensorProto.EXTERNAL
        del t.external_data[:]
        for k, v in (("location", "stripped-weights.bin"), ("offset", str(offset)), ("length", str(size))):
            t.external_data.add(key=k, value=v)
        offset += size
    onnx.save(model, str(out))


def main(names):
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names or DEFAULT:
        with tempfile.TemporaryDirectory() as tmp:
            full = Path(tmp) / f"{name}.onnx"
            counts, feeds = export(name, full)
            truth = {"source": f"torch {torch.__version__}, onnxruntime {ort.__version__}",
                     "torch_counts": counts, "feeds": {k: list(v[1]) for k, v in feeds.items()},
                     "ort": {str(b): ort_shapes(full, feeds, b) for b in BATCHES}}
            dest = (ZOO if name in TORCHVISION_ZOO else OUT) / f"{name}.onnx"
            strip_weights(full, dest)
        (OUT / f"{name}.json").write_text(json.dumps(truth, indent=0, sort_keys=True))
        print(name, counts, dest.stat().st_size, "bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
