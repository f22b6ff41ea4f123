"""Training terms on a small graph worked out by hand; the notes' memory example; the largest batch
against a brute-force search; the GPU catalog; the fit command's exit codes."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import archcalc
from archcalc.analysis.fit import largest_batch
from archcalc.analysis.gpus import CATALOG, gpu
from archcalc.api import fit_spec
from archcalc.cli import main

F = TensorProto.FLOAT


def mlp():
    """x[N,4] -> Gemm(4x3, +3) -> Relu -> Gemm(3x2, +2) -> y: 23 parameters."""
    inits = [numpy_helper.from_array(np.ones((4, 3), np.float32), "w1"),
             numpy_helper.from_array(np.ones(3, np.float32), "b1"),
             numpy_helper.from_array(np.ones((3, 2), np.float32), "w2"),
             numpy_helper.from_array(np.ones(2, np.float32), "b2")]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"])]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", F, ["N", 4])],
                          [helper.make_tensor_value_info("y", F, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_training_terms_by_hand():
    tm = archcalc.estimate(mlp(), batch=2).training_memory("adam", runtime="none")
    assert tm.weights == 23 * 4 and tm.gradients == 23 * 4 and tm.optimizer_state == 2 * 23 * 4
    # Relu overwrites h in place and keeps its output; the second Gemm keeps that same buffer.
    assert tm.saved_activations == 2 * 3 * 4
    # The largest gradient pair: Relu's input and output gradients, 6 floats each.
    assert tm.backward_transient == 2 * 6 * 4 and tm.backward_transient_layer == "Relu_1"
    assert tm.inputs == 2 * 4 * 4
    assert tm.terms_sum == 92 + 92 + 184 + 24 + 48 + 32 + 92  # + foreach Adam's sqrt(v)
    # The step's peak: weights, state, inputs (308) + all gradients (92) + foreach Adam's sqrt(v) (92),
    # above the backward's worst point (308 + 92 parameter gradients + 24 for h's gradient = 424).
    assert (tm.peak.phase, tm.total) == ("optimizer step", 308 + 92 + 92)
    sgd = archcalc.estimate(mlp(), batch=2).training_memory("sgd", runtime="none")
    assert (sgd.peak.phase, sgd.peak.layer, sgd.total) == ("backward", "Gemm_0", 92 + 32 + 92 + 24)


def test_an_activation_that_keeps_its_input_is_not_written_in_place():
    """Gemm -> Clip (ReLU6) -> Gemm: PyTorch's hardtanh keeps its input for backward (autograd's
    HardtanhBackward0 saves `self`), so its output needs a buffer of its own and both are saved --
    unlike Relu above, which keeps its output and may overwrite its input."""
    model = mlp()
    model.graph.node[1].op_type = "Clip"
    model.graph.node[1].input.extend(["", ""])
    tm = archcalc.estimate(model, batch=2).training_memory("sgd")
    assert tm.saved_activations == 2 * (2 * 3 * 4)  # h (Clip's input) and r (the second Gemm's input)
    # Inference may still write Clip in place: nothing needs h afterwards.
    assert archcalc.estimate(model, batch=2).inference_memory("none").activation_peak == 2 * 3 * 4 + 2 * 2 * 4


@pytest.mark.parametrize("optimizer,slots", [("sgd", 0), ("momentum", 1), ("adam", 2), ("adam-amsgrad", 3),
                                             ("rmsprop-momentum-centered", 3)])
def test_optimizer_slots(optimizer, slots):
    assert archcalc.estimate(mlp()).training_memory(optimizer).optimizer_state == slots * 23 * 4


def test_mixed_precision_keeps_fp32_master_and_state():
    tm = archcalc.estimate(mlp(), dtype="mixed").training_memory("adam")
    assert tm.weights == 23 * 2 and tm.master_weights == 23 * 4
    assert tm.gradients == 23 * 2 and tm.optimizer_state == 2 * 23 * 4


def test_notes_memory_example():
    """The notes: three 3x3 conv layers of 64 filters on 224x224x3 give three 224x224x64 volumes,
    about 10M activations, about 72 MB per image with their gradients."""
    w = [numpy_helper.from_array(np.ones((64, c, 3, 3), np.float32), f"w{i}") for i, c in enumerate([3, 64, 64])]
    nodes = [helper.make_node("Conv", [src, f"w{i}"], [dst], pads=[1, 1, 1, 1])
             for i, (src, dst) in enumerate([("x", "c0"), ("c0", "c1"), ("c1", "y")])]
    g = helper.make_graph(nodes, "three", [helper.make_tensor_value_info("x", F, [1, 3, 224, 224])],
                          [helper.make_tensor_value_info("y", F, None)], w)
    est = archcalc.estimate(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9))
    volumes = est.totals.activation_elements - 224 * 224 * 3
    assert volumes == 3 * 224 * 224 * 64 == 9_633_792
    with_gradients_mib = 2 * volumes * 4 / 2**20
    assert with_gradients_mib == pytest.approx(72, rel=0.03)


def test_largest_batch_equals_brute_force():
    spec = fit_spec(mlp(), capacity=10_000, mode="train", optimizer="adam", runtime="none")
    best = largest_batch(spec)
    brute = max(b for b in range(1, 400) if spec.verdict(b).fits)
    assert best.batch == brute and not spec.verdict(brute + 1).fits


def test_largest_batch_with_a_rounding_allocator_equals_brute_force():
    spec = fit_spec("torchvision/alexnet", capacity=600 << 20, runtime="onnxruntime-cpu-arena")
    best = largest_batch(spec)
    assert spec.verdict(best.batch).fits and not spec.verdict(best.batch + 1).fits


def test_gpu_catalog_spans_the_notes_to_today():
    for name in ["GTX-580", "GTX-680", "GTX-Titan", "Titan-X", "K40", "K80", "T4", "V100-16GB", "V100-32GB", "A10",
                 "A10G", "L4", "L40S", "A100-40GB", "A100-80GB", "H100-80GB", "H200", "B200", "RTX-3090",
                 "RTX-4090", "RTX-5090", "MI250X", "MI300X"]:
        assert name in CATALOG
    assert gpu("a100_80gb").bytes == 80 * 2**30 and CATALOG["GTX-580"].bytes == 3 * 2**30


def test_fit_exit_codes():
    runner = CliRunner()
    ok = runner.invoke(main, ["fit", "torchvision/alexnet", "--memory", "4GiB", "--batch", "8"])
    assert ok.exit_code == 0 and "batch 8: fits" in ok.output
    no = runner.invoke(main, ["fit", "torchvision/vgg16", "--gpu", "GTX-580", "--mode", "train", "--batch", "64"])
    assert no.exit_code == 1 and "does NOT fit" in no.output and "largest term: saved activations" in no.output
    bad = runner.invoke(main, ["fit", "torchvision/vgg16", "--gpu", "Voodoo2"])
    assert bad.exit_code == 2 and "not in the catalog" in bad.output
    search = runner.invoke(main, ["fit", "torchvision/alexnet", "--gpu", "T4"])
    assert search.exit_code == 0 and "largest batch that fits:" in search.output
