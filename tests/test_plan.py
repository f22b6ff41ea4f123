"""The planner's own checks: one truth with `fit`, the micro-batch line against direct analyses, units
from real exports, the greedy ZeRO-1 partition against PyTorch's, the checkpoint planner against
Chen et al.'s sqrt(n) segments, the GPU catalog's driver totals, and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from plan_models import gpt_layers

from archcalc.analysis.estimate import analyse
from archcalc.analysis.gpus import CATALOG, gpu
from archcalc.analysis.plan.checkpointing import cut_points, sqrt_segments
from archcalc.analysis.plan.gpu_memory import Strategy
from archcalc.analysis.plan.line import Line
from archcalc.analysis.plan.params import zero1_partition
from archcalc.analysis.plan.planner import Planner
from archcalc.analysis.plan.search import parse_strategy
from archcalc.analysis.plan.units import find_units
from archcalc.api import fit_spec
from archcalc.cli import main
from archcalc.frontends.onnx_import import import_onnx
from archcalc.frontends.sources import load_graph


@pytest.mark.parametrize("model", ["resnet18", "vgg16", "torchvision/resnet50", "torchvision/vit_b_16"])
def test_one_gpu_plan_is_the_fit_total(model):
    """The plan's one-GPU row and `fit --mode train` are one number, at any batch."""
    planner = Planner(load_graph(model), optimizer="adam")
    spec = fit_spec(model, 80 << 30, "train", "adam")
    for b in (1, 3, 8):
        assert planner.memory(Strategy(), b)[0].peak + planner.constant == spec.verdict(b).total


@pytest.mark.parametrize("strategy", [Strategy(dp=4, zero=3), Strategy(dp=2, zero=2, checkpoint="full"),
                                      Strategy(tp=2, sp=True, dp=2, zero=1), Strategy(pp=2, micro_batches=4)])
def test_micro_batch_line_is_the_direct_analysis(strategy):
    """Every moment of the step is a line in the micro-batch: the line through 1 and 2 at 7 is what
    a planner analysing the graph at 7 and 8 says at 7."""
    graph = import_onnx(gpt_layers(2, 64, 64, 4))
    line = Planner(graph, optimizer="adam")
    direct = Planner(graph, optimizer="adam")
    direct.ests = tuple(analyse(graph, b) for b in (7, 8))
    direct._cache.clear()  # the views read the analyses just replaced
    stages = line.stages(strategy, 7)
    want = [m.peak for m in direct.memory(strategy, 1, stages=stages)]
    assert [m.peak for m in line.memory(strategy, 7, stages=stages)] == want


def test_largest_micro_batch_is_the_last_that_fits():
    planner = Planner(load_graph("torchvision/resnet50"), optimizer="adam")
    for s in (Strategy(dp=8, zero=3), Strategy(pp=2, dp=4, micro_batches=8), Strategy(dp=8, checkpoint="full")):
        b = planner.largest_micro_batch(s, 24 << 30)
        fits = [max(m.peak for m in planner.memory(s, x)) + planner.constant <= 24 << 30 for x in (b, b + 1)]
        assert b > 0 and fits == [True, False], s


def test_units_from_module_paths_and_design_blocks():
    torch_units = find_units([r.layer for r in analyse(load_graph("torchvision/resnet50")).results])
    assert torch_units.source == "module paths"
    names = [u.name for u in torch_units.units if u.repeated]
    assert names[:3] == ["layer1/layer1.0", "layer1/layer1.1", "layer1/layer1.2"] and len(names) == 16  # 3+4+6+3
    design = find_units([r.layer for r in analyse(load_graph("resnet18")).results])
    assert design.source == "design blocks" and sum(u.repeated for u in design.units) == 8
    given = find_units([r.layer for r in analyse(load_graph("torchvision/resnet50")).results], r"/(layer\d)/")
    assert [u.name for u in given.units if u.repeated] == ["layer1", "layer2", "layer3", "layer4"]


def test_zero1_partition_is_pytorchs():
    torch = pytest.importorskip("torch")
    dist = pytest.importorskip("torch.distributed.optim")
    model = torch.nn.Sequential(torch.nn.Linear(300, 200), torch.nn.Linear(200, 50), torch.nn.Linear(50, 7))
    sizes = [p.numel() for p in model.parameters()]
    for ranks in (2, 3, 4):
        zero = dist.ZeroRedundancyOptimizer.__new__(dist.ZeroRedundancyOptimizer)
        zero.world_size, zero.param_groups = ranks, [{"params": list(model.parameters())}]
        zero._partition_parameters_cache = []
        theirs = [[p.numel() for group in zero._partition_parameters()[r] for p in group["params"]]
                  for r in range(ranks)]
        assert [sorted(r) for r in zero1_partition(sizes, ranks)] == [sorted(r) for r in theirs]


@pytest.mark.parametrize("model, b", [("torchvision/mobilenet_v2", 32), ("torchvision/resnet50", 32)])
def test_checkpoint_plan_within_sqrt_segments_memory(model, b):
    """At the memory Chen et al.'s sqrt(n) segments need, the plan fits and recomputes no more; the
    segments it keeps whole are saved as profiled (checked against PyTorch in test_parallel_measured)."""
    planner = Planner(load_graph(model), "adam")
    v = planner.view(1, False)
    chen = Strategy(checkpoint="planned", segments=sqrt_segments(cut_points(v.shaped, v.results)))
    budget = max(m.peak for m in planner.memory(chen, b)) + planner.constant
    plan = planner.planned(Strategy(checkpoint="planned"), budget, b=b)
    assert plan.checkpoint == "planned" and plan.segments is not None
    assert max(m.peak for m in planner.memory(plan, b)) + planner.constant <= budget
    assert planner.recompute(plan, b) <= planner.recompute(chen, b)


def test_catalog_judges_against_the_drivers_total():
    assert gpu("T4").capacity == 15843721216  # CUDA's total on a T4 (not its 16 GiB marketing figure)
    assert gpu("H100-80GB").smi == 81559 << 20 and gpu("H100-80GB").capacity == 85045477376
    assert all(g.capacity <= g.bytes * 1.08 for g in CATALOG.values())
    assert gpu("H200").capacity == gpu("H200").bytes  # no published driver figure: said so by `archcalc gpus`


def run(*args):
    return CliRunner().invoke(main, ["plan", *map(str, args)])


def test_plan_command():
    out = run("torchvision/resnet50", "--gpu", "T4", "--gpus", "8", "--global-batch", "512")
    assert out.exit_code == 0, out.output
    assert "dp8" in out.output and "GiB/GPU" in out.output
    data = json.loads(run("torchvision/resnet50", "--gpus", "4", "--format", "json").output)
    assert data["schema"] == "archcalc.plan/1" and data["rows"][0]["fits"]
    one = run("torchvision/resnet50", "--gpus", "4", "--strategy", "dp4 zero3 ckpt=full")
    assert one.exit_code == 0 and "dp4 zero3 ckpt full: fits" in one.output
    big = run("torchvision/vgg16", "--gpu", "GTX-580", "--gpus", "2", "--strategy", "dp2", "--global-batch", "4096")
    assert big.exit_code == 1 and "does NOT fit" in big.output
    ds = run("torchvision/resnet50", "--gpus", "8", "--deepspeed-estimators")
    assert ds.exit_code == 0 and "ZeRO-3: per CPU | per GPU" in ds.output


@pytest.mark.parametrize("args, flag", [(["--strategy", "dp8 zero9"], "ZeRO"), (["--strategy", "warp9"], "warp9"),
                                        (["--gpus", "6", "--nodes", "4"], "--gpus"),
                                        (["--units", "(["], "--units"), (["--strategy", "dp2 pp8"], "GPUs")])
def test_plan_bad_input_is_one_line(args, flag):
    out = run("torchvision/resnet50", *args)
    assert out.exit_code == 2 and flag in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_a_file_that_fixes_its_batch_is_judged_as_it_is():
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="/fc/MatMul")], "fixed",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 32])],
                          [onnx.numpy_helper.from_array(__import__("numpy").ones((64, 32), "float32"), "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    planner = Planner(import_onnx(model), "adam")
    assert planner.fixed and planner.largest_micro_batch(Strategy(dp=2), 1 << 30) == 1
    assert planner.largest_micro_batch(Strategy(dp=2), planner.constant + 100) == 0  # the weights alone are 8 KiB
    with pytest.raises(Exception, match="fixes its batch"):
        planner.row(Strategy(dp=2), 1 << 30, global_batch=8)


@pytest.mark.parametrize("words, bad", [("dp8 warp9 zero3", "warp9"), ("dp8 zero3 offload=gpu", "offload=gpu"),
                                        ("dp8 ckpt=some", "ckpt=some"), ("dp8 zero4", "zero4")])
def test_a_bad_strategy_is_refused_before_any_analysis(monkeypatch, words, bad):
    def analysed(*args, **kwargs):
        raise AssertionError("the graph was analysed before its --strategy was read")

    monkeypatch.setattr("archcalc.analysis.plan.planner.analyse", analysed)
    out = run("torchvision/resnet50", "--gpus", "8", "--strategy", words)
    assert out.exit_code == 2 and f"'{bad}'" in out.output, out.output
    assert "dpN" in out.output and "ckpt=none|full|selective|op|planned|everyN|uniformN|blockN" in out.output  # the valid forms
    assert len(out.output.strip().splitlines()) == 1


def test_the_lines_largest_micro_batch_is_the_last_at_or_under_the_cap():
    rng = np.random.default_rng(0)
    for _ in range(200):
        one = rng.integers(0, 1000, 6)
        line = Line(one, one + rng.integers(-50, 200, 6))
        cap, limit = int(rng.integers(0, 3000)), 64
        want = 0  # counted up, one micro-batch at a time
        while want < limit and np.all(line.at(want + 1) <= cap):
            want += 1
        assert line.largest(cap, limit) == want


def test_pipeline_stages_are_balanced_by_the_memory_they_are_judged_on():
    """Two stages: the cut the planner keeps is, of every cut, the one whose judged peak is least."""
    planner = Planner(load_graph("torchvision/resnet50"), "adam")
    s, n = Strategy(dp=4, pp=2, micro_batches=4), len(planner.units)
    for b in (1, 64, 1024):
        judged = {c: max(planner.memory(s, b, stages=[planner._stage(s, 0, c, 0)])[0].peak,
                         planner.memory(s, b, stages=[planner._stage(s, c, n, 1)])[0].peak) for c in range(1, n)}
        kept = max(m.peak for m in planner.memory(s, b))
        assert kept == min(judged.values())


@pytest.mark.parametrize("words", ["dp2 pp4", "dp2 zero1 pp4 micro1", "dp2 zero2 pp4 ckpt=full", "dp2 zero3 pp4 micro1",
                                   "dp2 zero3 pp4 offload=params", "dp2 zero2 pp4 engine=deepspeed",
                                   "dp2 hybrid1 zero3 pp4 gpipe micro3", "dp2 zero3 pp4 interleaved x2 micro5"])
def test_stages_judged_at_once_are_each_judged_alone(words):
    """The rebalancing judges many candidate stages in one array expression; each peak is the one
    the planner finds for that stage alone (every contiguous run of units, at every place)."""
    planner = Planner(load_graph("gpt2-124m"), "adam", dtype="mixed")
    s, n = parse_strategy(words, 8), len(planner.units)
    places = [(i, j, k) for i in range(n) for j in range(i + 1, n + 1) for k in range(s.pp)]
    for b in (1, 3):
        alone = [planner.memory(s, b, stages=[planner._stage(s, *p)])[0].peak for p in places]
        assert planner.judge(s, b).peaks(places).tolist() == alone


@pytest.mark.parametrize("checkpoint", ["full", "selective", "planned"])
def test_every_term_of_a_pipelined_checkpointed_stage_is_a_size(checkpoint):
    """A stage stands on what the stages before it keep at rest, not on the recomputed tensors of
    their last checkpointed run (once a negative "saved activations" on a later stage; against
    PyTorch's pipeline with checkpointed blocks, benchmarks/compare_parallel.py's pp_1f1b_ckpt)."""
    design = "TOKENS[64] -> EMBED-1000x64 -> [LN -> ATTN-4h -> LN -> MLP-256]*4 -> LN -> LMHEAD-1000"
    planner = Planner(load_graph(design), "adam")
    for words, batch in (("dp2 zero2 tp2+sp pp2", 2), ("pp4 gpipe", 2), ("pp2 interleavedx2", 4), ("pp2", 64)):
        for ckpt in (checkpoint, "none"):
            row = planner.row(parse_strategy(f"{words} ckpt {ckpt}", 8), gpu("H100-80GB").capacity, batch)
            assert row.fits and min(row.memory.terms.values()) >= 0, (words, ckpt, row.memory.terms)


def test_a_printed_row_reads_back_as_its_strategy():
    """Every strategy `plan` prints, pasted into --strategy, is the same strategy."""
    design = "TOKENS[64] -> EMBED-1000x64 -> [LN -> ATTN-4h -> LN -> MLP-256]*4 -> LN -> LMHEAD-1000"
    out = CliRunner().invoke(main, ["plan", design, "--gpu", "A100-40GB", "--gpus", "8", "--format", "json"])
    labels = [row["strategy"] for row in json.loads(out.output)["rows"]]
    assert any("+sp" in label for label in labels) and any("ckpt" in label for label in labels)
    labels += ["dp2 zero3 tp2+sp pp2 interleavedx2 ckpt selective offload params balance compute deepspeed",
               "dp4 zero1 pp2 gpipe offload optimizer", "dp4 zero3 hybrid2 tp2"]
    for label in labels:
        assert parse_strategy(label, 8).label() == label


def test_a_search_past_its_budget_is_refused_before_it_starts(monkeypatch):
    """300 blocks (about 9,000 layers) under every strategy of 4,096 GPUs (about 400) take minutes: refused
    before any strategy is judged, naming --strategy; the same strategy alone is judged."""
    design = "TOKENS[64] -> EMBED-1000x64 -> [LN -> ATTN-4h -> LN -> MLP-256]*300 -> LN -> LMHEAD-1000"
    args = ["plan", design, "--gpu", "H100-80GB", "--gpus", "4096", "--global-batch", "4096"]
    judge = Planner.row
    with monkeypatch.context() as m:
        m.setattr(Planner, "row", lambda *a, **k: pytest.fail("a strategy was judged past the budget"))
        out = CliRunner().invoke(main, args)
    assert out.exit_code == 2 and "--strategy" in out.output and out.output.count("\n") == 1, out.output
    assert Planner.row is judge
    one = CliRunner().invoke(main, [*args, "--strategy", "dp512 zero3 tp8 sp"])
    assert one.exit_code in (0, 1) and "dp512 zero3 tp8+sp" in one.output, one.output


@pytest.mark.parametrize("model,gpus,nodes,global_batch", [
    ("gpt2-124m", 8, 1, None), ("gpt2-124m", 4, 1, 24), ("torchvision/resnet50", 16, 2, 512),
    ("llama-2-7b", 16, 2, 512)])
def test_one_verdict_per_strategy(model, gpus, nodes, global_batch):
    """A row fits exactly when its memory is within the card, and the same strategy judged alone
    (--strategy, from the row's label) is the same row: once a pipeline row read "no" at 8 GiB of
    80, shown at one micro-batch count and judged at another."""
    from archcalc.analysis.plan.search import plan_result

    planner = Planner(load_graph(model), "adam", dtype="mixed")
    capacity = gpu("H100-80GB").capacity
    rows = plan_result(planner, capacity, gpus, nodes, global_batch).rows
    assert model != "llama-2-7b" or sum(not r.fits for r in rows) >= 3
    for row in rows:
        assert row.fits == (row.total <= capacity), (row.strategy.label(), row.total)
        alone = plan_result(planner, capacity, gpus, nodes, global_batch, strategy=row.strategy.label()).rows[0]
        assert (alone.fits, alone.total, alone.micro_batch, alone.accumulation) == (
            row.fits, row.total, row.micro_batch, row.accumulation), row.strategy.label()


def test_a_no_says_where_and_by_how_much():
    """Llama-2-7B (published config) alone on a 40 GB card: the verdict names the overshoot (the
    total less the card), the phase and the largest term; the JSON row carries the shortfall."""
    args = ["plan", "llama-2-7b", "--gpu", "A100-40GB", "--gpus", "1", "--strategy", "dp1"]
    text = CliRunner().invoke(main, args)
    row = json.loads(CliRunner().invoke(main, [*args, "--format", "json"]).output)["rows"][0]
    assert text.exit_code == 1 and not row["fits"] and row["shortfall"] == row["total"] - row["capacity"] > 0
    largest = max(row["terms"], key=row["terms"].get)
    verdict = text.output.splitlines()[1]
    assert f"the largest term {largest}" in verdict and f"at the {row['phase']}" in verdict and " over; " in verdict


def test_megatron_recompute_methods_are_judged_without_a_pipeline_only():
    out = run("gpt2-124m", "--gpus", "8", "--strategy", "dp4 pp2 ckpt=uniform2")
    assert out.exit_code == 2 and "within each pipeline stage" in out.output, out.output
