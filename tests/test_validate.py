"""archcalc validate on small models with weights, run by onnxruntime on the CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from archcalc.cli import main
from archcalc.measure.validate import validate

F = TensorProto.FLOAT


def small_cnn(tmp_path, channels=32, side=64):
    """conv -> relu -> pool -> conv -> relu -> global pool -> flatten -> gemm, with real weights."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3), np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((channels, channels, 3, 3), np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal((channels, 10), np.float32), "fc"),
             numpy_helper.from_array(np.zeros(10, np.float32), "fcb")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], name="fc")]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", F, ["N", 3, side, side])],
                          [helper.make_tensor_value_info("y", F, None)], inits)
    path = tmp_path / "cnn.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    return path


@pytest.mark.parametrize("batch", [1, 8])
def test_shapes_bytes_and_profiler_peak_match(tmp_path, batch):
    v = validate(small_cnn(tmp_path), batch=batch, levels=("disable",))
    assert v.provider == "CPUExecutionProvider"
    assert v.checked_tensors == 8 and not v.mismatches
    assert [n.measured_bytes for n in v.nodes] == [n.estimated_bytes for n in v.nodes]
    # onnxruntime's arena saw exactly the buffers the liveness estimate predicts.
    assert v.profiler_peak == v.estimate.inference_memory("none").activation_peak


def test_process_peak_is_measured_in_a_child(tmp_path):
    v = validate(small_cnn(tmp_path, channels=64, side=128), batch=8, levels=("disable",))
    (peak,) = v.process_peaks
    est = v.estimate.inference_memory("none").activation_peak
    assert len(peak.runs) == 3 and peak.load_peak > 0
    assert abs(peak.run_peak - est) <= max(0.05 * est, 2 << 20)


def test_cli_passes_and_reports_json(tmp_path):
    result = CliRunner().invoke(main, ["validate", str(small_cnn(tmp_path)), "--batch", "2", "--quiet",
                                       "--opt-level", "disable", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["passed"] and data["shapes"]["mismatches"] == []


def test_structure_only_model_is_a_clear_error():
    result = CliRunner().invoke(main, ["validate", "torchvision/alexnet", "--quiet"])
    assert result.exit_code == 2
    assert "validation needs the model with its weights" in result.output


def test_token_ids_stay_inside_the_embedding_table(tmp_path):
    table = numpy_helper.from_array(np.ones((50, 8), np.float32), "emb")
    g = helper.make_graph([helper.make_node("Gather", ["emb", "ids"], ["y"], name="lookup")], "emb",
                          [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 16])],
                          [helper.make_tensor_value_info("y", F, None)], [table])
    path = tmp_path / "emb.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    v = validate(path, batch=4, levels=())
    assert not v.mismatches and v.estimate.graph.tensors["y"].shape == (4, 16, 8)


def test_optimizer_changes_are_reported(tmp_path):
    """With optimizations on, onnxruntime fuses the Relus into the convs: the counts say so."""
    v = validate(small_cnn(tmp_path), batch=1, levels=("all",))
    assert v.optimizer_changes.get("Relu", 0) < 0
    assert sum(v.optimizer_changes.values()) < 0  # fewer nodes than written


@pytest.mark.parametrize("design", ["resnet18", "googlenet"])
def test_planner_model_matches_onnxruntimes_arena_on_residual_and_inception_nets(tmp_path, design):
    """onnxruntime's depth-first order, its in-place rule and its reuse of dead buffers of a
    statically equal shape: the estimate equals the arena's measured peak exactly."""
    import onnx

    from archcalc.frontends.onnx_export import to_onnx
    from archcalc.frontends.sources import load_graph

    path = tmp_path / f"{design}.onnx"
    onnx.save(to_onnx(load_graph(design)), str(path))
    v = validate(path, batch=2, levels=())
    assert v.profiler_peak == v.estimate.inference_memory("onnxruntime-cpu").activation_peak


def test_totals_stand_beside_the_process_figure_and_no_gpu_channel_runs_without_a_gpu(tmp_path):
    from archcalc.measure.compare import validation_figures
    from archcalc.measure.cuda import cuda_usable, providers

    v = validate(small_cnn(tmp_path, channels=64, side=128), batch=8, levels=("disable",))
    figures = {name: (est, measured) for name, est, measured in validation_figures(v)}
    est, measured = figures["total (process, opt disable)"]
    # The steady total: weights + inputs + activation peak + onnxruntime's constant, against the
    # child's resident set after loading plus the rise over a run.
    assert abs(est / measured - 1) <= 0.10, (est, measured)
    if not cuda_usable():
        assert v.cuda_peaks == [] and providers() == ["CPUExecutionProvider"]


def fragmenting_graph(tmp_path, n=64, u=256):
    """Tiles of 100, 60 and 120 units and a slice of 50: freed gaps too small for what comes next."""
    def ints(name, v):
        return numpy_helper.from_array(np.array(v, np.int64), name)

    inits = [ints("r100", [1, 100]), ints("r60", [1, 60]), ints("r120", [1, 120]), ints("s0", [0]),
             ints("s50", [50 * u]), ints("ax", [1])]
    nodes = [helper.make_node("Tile", ["x", "r100"], ["a"], name="a"),
             helper.make_node("Slice", ["a", "s0", "s50", "ax"], ["b"], name="b"),
             helper.make_node("Tile", ["x", "r60"], ["c"], name="c"),
             helper.make_node("Tile", ["x", "r120"], ["d"], name="d"),
             helper.make_node("Concat", ["b", "c", "d"], ["y"], axis=1, name="y")]
    g = helper.make_graph(nodes, "frag", [helper.make_tensor_value_info("x", F, [n, u])],
                          [helper.make_tensor_value_info("y", F, None)], inits)
    path = tmp_path / "frag.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    return path


def test_runs_after_the_first_hold_onnxruntimes_memory_pattern_block(tmp_path):
    """The first run peaks at the liveness estimate; later runs place every buffer in the block
    onnxruntime's memory-pattern planner laid out from the first run, fragmentation included."""
    v = validate(fragmenting_graph(tmp_path), levels=("disable",))
    im = v.estimate.inference_memory("onnxruntime-cpu")
    first, *later = v.process_peaks[0].runs
    assert im.pattern_peak > 1.15 * im.activation_peak  # the layout wastes space: a real difference
    # The arena's own count: the first run's peak, then the block a second run holds (and the output).
    assert (v.profiler_peak, v.profiler_peak_later) == (im.activation_peak, im.pattern_peak)
    assert abs(first - im.activation_peak) <= 0.02 * im.activation_peak
    assert all(abs(run - im.pattern_peak) <= 0.02 * im.pattern_peak for run in later)


def test_hardswish_runs_as_a_function_with_an_intermediate(tmp_path):
    """onnxruntime runs HardSwish as HardSigmoid then Mul: while it runs, its input, the
    HardSigmoid output and its own output are alive together (the profiler names the two nodes)."""
    two = numpy_helper.from_array(np.array(2, np.float32), "two")
    nodes = [helper.make_node("Mul", ["x", "two"], ["a"], name="pre"),
             helper.make_node("HardSwish", ["a"], ["b"], name="hswish"),
             helper.make_node("Mul", ["b", "two"], ["y"], name="post")]
    g = helper.make_graph(nodes, "hs", [helper.make_tensor_value_info("x", F, ["N", 8, 64, 64])],
                          [helper.make_tensor_value_info("y", F, None)], [two])
    path = tmp_path / "hs.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    v = validate(path, batch=2, levels=())
    size = 2 * 8 * 64 * 64 * 4
    assert v.profiler_peak == 3 * size == v.estimate.inference_memory("onnxruntime-cpu").activation_peak
