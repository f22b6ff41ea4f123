"""Real exported models against independent truths: onnxruntime's executed shapes, torch's
parameter counts, and torchvision's documented GFLOPS (which are multiply-accumulates)."""

from __future__ import annotations

import onnx
import pytest
from conftest import exported_models, input_shapes, model_path, truth

import archcalc

# torchvision's model documentation, "GFLOPS" column (counted as MACs) at 224x224.
TORCHVISION_GMACS = {"alexnet": 0.71, "vgg16": 15.47, "resnet50": 4.09, "mobilenet_v2": 0.30,
                     "efficientnet_b0": 0.39, "googlenet": 1.50, "squeezenet1_0": 0.82, "vit_b_16": 17.56}
# Exports that keep every parameter as torch has it: no BatchNorm folded away.
EXACT_PARAMS = ["alexnet", "vgg16", "squeezenet1_0", "vit_b_16", "resnet50_train", "mobilenet_v2_train"]


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("name", exported_models())
def test_every_tensor_shape_matches_onnxruntime(name, batch):
    est = archcalc.estimate(model_path(name), inputs=input_shapes(name, batch))
    executed = truth(name)["ort"][str(batch)]
    wrong = {n: (s["shape"], est.graph.tensors[n].shape if n in est.graph.tensors else None)
             for n, s in executed.items()
             if n not in est.graph.tensors or list(est.graph.tensors[n].shape) != s["shape"]}
    assert not wrong, f"{len(wrong)} of {len(executed)} shapes differ, e.g. {list(wrong.items())[:3]}"
    dtypes = {n: (s["dtype"], est.graph.tensors[n].dtype) for n, s in executed.items()
              if est.graph.tensors[n].dtype != s["dtype"]}
    assert not dtypes


@pytest.mark.parametrize("name", EXACT_PARAMS)
def test_parameters_equal_torch(name):
    est = archcalc.estimate(model_path(name), inputs=input_shapes(name, 1))
    counts = truth(name)["torch_counts"]
    # Per layer: what torch has. Fresh exports merge equal constants (zero biases), so the file may
    # store fewer (what it stores is checked against the file itself below).
    assert est.totals.params_per_layer == counts["params"]
    if name.endswith("_train"):  # BatchNorm kept: running statistics shown apart as buffers
        assert est.totals.buffers == counts["buffers"]


def test_bert_parameters_equal_torch_less_the_unexported_pooler():
    """The export returns last_hidden_state, so the pooler (a 768x768 dense layer) is not in it."""
    est = archcalc.estimate(model_path("bert_base"), inputs=input_shapes("bert_base", 1))
    hidden = 768
    assert est.totals.params == truth("bert_base")["torch_counts"]["params"] - (hidden * hidden + hidden)


@pytest.mark.parametrize("name", exported_models())
def test_stored_parameters_equal_the_files_float_initializers(name):
    """The stored count is every distinct non-scalar float initializer, read straight off the file."""
    model = onnx.load(str(model_path(name)), load_external_data=False)
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
    sizes = [int(onnx.helper.np.prod(t.dims)) for t in model.graph.initializer if t.data_type in floats]
    est = archcalc.estimate(model_path(name), inputs=input_shapes(name, 1))
    assert est.totals.params + est.totals.buffers == sum(s for s in sizes if s > 1)


@pytest.mark.parametrize("name", sorted(TORCHVISION_GMACS))
def test_macs_equal_torchvision_documentation(name):
    est = archcalc.estimate(f"torchvision/{name}")
    assert round(est.totals.macs / 1e9, 2) == TORCHVISION_GMACS[name]


def test_eval_export_folds_batchnorm_so_the_file_holds_fewer_weights():
    est = archcalc.estimate("torchvision/resnet50")
    assert est.totals.params < truth("resnet50")["torch_counts"]["params"]
    assert est.totals.buffers == 0


def test_transformer_shapes_onnx_leaves_unknown_are_all_resolved():
    """onnx's own inference leaves many of BERT's shapes symbolic or unknown; archcalc binds all."""
    model = onnx.load(str(model_path("bert_base")), load_external_data=False)
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {vi.name for vi in inferred.graph.value_info
             if vi.type.tensor_type.HasField("shape")
             and all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim)}
    produced = {o for n in model.graph.node if n.op_type != "Constant" for o in n.output}
    assert len(produced - known) > 100  # onnx cannot say these concretely
    est = archcalc.estimate(model_path("bert_base"), batch=2, dims={"sequence": 128})
    assert all(all(isinstance(d, int) for d in est.graph.tensors[n].shape) for n in produced)
