"""The design language and the zoo, against the papers, torchvision and the CS231n notes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archcalc
from archcalc.cli import main
from archcalc.errors import DSLError
from archcalc.frontends.dsl.build import build
from archcalc.frontends.onnx_export import MAX_EXPORT_BYTES, to_onnx
from archcalc.frontends.sources import load_graph, zoo_models
from archcalc.measure.validate import check_shapes, feeds
from archcalc.render.notes import notes_rows, notes_totals

# Trainable parameters as the papers or torchvision state them (see each zoo file's header).
PUBLISHED = {
    "vgg11": 132_863_336, "vgg16": 138_357_544, "vgg19": 143_667_240,
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "googlenet": 6_624_904, "mobilenet_v1": 4_231_976, "alexnet-torchvision": 61_100_840,
    "alexnet-2012": 60_965_224, "lenet5": 61_706,
}
DESIGNS = sorted(name for name in zoo_models() if not name.startswith("torchvision/"))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_zoo_parameter_counts(name):
    assert archcalc.estimate(name).totals.params == PUBLISHED[name]


def test_mobilenet_v1_mult_adds_match_the_paper():
    assert round(archcalc.estimate("mobilenet_v1").totals.macs / 1e6) == 569  # Howard et al., Table 1


# The CS231n notes' VGG-16 table (FIGURES.md): output, memory (activations), weights without biases.
NOTES_VGG = [("INPUT", "224x224x3", 150_528, 0)] + \
    [("CONV3-64", "224x224x64", 3_211_264, w) for w in (1_728, 36_864)] + [("POOL2", "112x112x64", 802_816, 0)] + \
    [("CONV3-128", "112x112x128", 1_605_632, w) for w in (73_728, 147_456)] + [("POOL2", "56x56x128", 401_408, 0)] + \
    [("CONV3-256", "56x56x256", 802_816, w) for w in (294_912, 589_824, 589_824)] + \
    [("POOL2", "28x28x256", 200_704, 0)] + \
    [("CONV3-512", "28x28x512", 401_408, w) for w in (1_179_648, 2_359_296, 2_359_296)] + \
    [("POOL2", "14x14x512", 100_352, 0)] + [("CONV3-512", "14x14x512", 100_352, 2_359_296)] * 3 + \
    [("POOL2", "7x7x512", 25_088, 0), ("FC", "1x1x4096", 4_096, 102_760_448), ("FC", "1x1x4096", 4_096, 16_777_216),
     ("FC", "1x1x1000", 1_000, 4_096_000)]


def test_notes_vgg_table_row_by_row():
    rows = notes_rows(archcalc.estimate("vgg16"))
    assert [(a, b, c, int(d.split("= ")[-1].replace(",", ""))) for a, b, c, d in rows] == NOTES_VGG


def test_notes_vgg_totals_explained():
    totals = dict(notes_totals(archcalc.estimate("vgg16")))
    assert totals["the rows add up to"].startswith("15,237,608 activations")  # FIGURES.md: issue #88
    assert totals["weights (without biases)"] == "138,344,128"
    assert totals["parameters (with 13,416 biases)"] == "138,357,544"


def test_alexnet_conv1_as_in_the_notes():
    est = archcalc.estimate("alexnet-2012")
    conv1 = est.layers_list[0]
    assert conv1.shape == (1, 96, 55, 55) and conv1.activations == 290_400
    assert conv1.weights == 34_848 and conv1.biases == 96


def test_cifar10_small_net_as_in_the_notes():
    shapes = [r.shape for r in archcalc.estimate("cifar10-small").layers_list if r.op_type != "Flatten"]
    assert shapes == [(1, 12, 32, 32), (1, 12, 32, 32), (1, 12, 16, 16), (1, 10)]


def test_zfnet_sizes_from_the_paper():
    est = archcalc.estimate("zfnet")
    windows = [r.shape[1:] for r in est.layers_list if r.op_type in ("Conv", "MaxPool")]
    assert windows == [(96, 110, 110), (96, 55, 55), (256, 26, 26), (256, 13, 13), (384, 13, 13), (384, 13, 13),
                       (256, 13, 13), (256, 6, 6)]


def test_one_7x7_against_three_3x3():
    c = 64
    one = archcalc.estimate("INPUT[56x56x64] -> CONV7-64/nobias")
    three = archcalc.estimate("INPUT[56x56x64] -> [CONV3-64/nobias -> RELU]*3")
    assert one.totals.params == 49 * c * c and three.totals.params == 27 * c * c
    assert one.layers_list[-1].receptive_field == three.layers_list[-1].receptive_field == 7
    assert sum(r.op_type == "Relu" for r in three.layers_list) == 3  # two more non-linearities than one


# Run only with `pytest -m slow`: 4 to 40 s each on this project's 2-core machine (gpt2-124m's run
# holds 10 GB: every output of 1,024 tokens exposed at once). Their layer kinds run by default, in the
# other designs and in the two designs below, GPT-2's and BERT's layers at toy sizes.
SLOW_DESIGNS = {"vgg11", "vgg19", "alexnet-torchvision", "zfnet", "gpt2-124m", "bert-base"}
SMALL_KIN = {
    "gpt2-kin": "TOKENS[16] -> EMBED-100x32/pos16 -> [LN -> ATTN-4h/bias -> LN -> MLP-128/gelu_tanh]*2 -> LN "
                "-> LMHEAD-100/tied",
    "bert-kin": "TOKENS[16] -> EMBED-100x32/pos16/types2 -> LN -> [ATTN-4h/bias/post -> LN -> MLP-128/gelu/post "
                "-> LN]*2 -> POOLER",
}
EXPORTED = [pytest.param(d, marks=pytest.mark.slow) if d in SLOW_DESIGNS else d for d in DESIGNS] + \
    [pytest.param(text, id=kin) for kin, text in SMALL_KIN.items()]


def _fits_one_file(name: str) -> bool:
    return archcalc.estimate(name).totals.params * 4 <= MAX_EXPORT_BYTES


@pytest.mark.parametrize("name", EXPORTED)
def test_every_zoo_design_exports_runs_and_keeps_its_estimate(name):
    graph = load_graph(name)
    if not _fits_one_file(name):  # the 7B transformers: their small kin export and run in
        pytest.skip("weights over protobuf's 2 GiB")  # test_dsl_transformer.py
    model = to_onnx(graph)  # checked by onnx.checker there
    design = archcalc.estimate(name, batch=2)
    exported = archcalc.estimate(model, batch=2)
    assert exported.totals.params == design.totals.params and exported.totals.macs == design.totals.macs
    assert exported.peak_activation_bytes == design.peak_activation_bytes
    checked, mismatches, _ = check_shapes(model, exported, feeds(exported))
    assert checked == len(model.graph.node) and not mismatches


def _kinds(design: str) -> set:
    """A design's layer kinds: each op with its attributes' names and text values (Gelu's tanh)."""
    return {(ly.op_type, frozenset(f"{k}={v}" if isinstance(v, str) else k for k, v in ly.attrs.items()))
            for ly in load_graph(design).layers}


def test_the_default_run_exports_every_layer_kind_of_the_slow_designs():
    default = [d for d in DESIGNS if d not in SLOW_DESIGNS and _fits_one_file(d)] + list(SMALL_KIN.values())
    exported = set().union(*map(_kinds, default))
    for name in sorted(SLOW_DESIGNS):
        assert _kinds(name) <= exported, f"{name}: {_kinds(name) - exported} exported only with -m slow"


def test_repetition_optional_layers_and_blocks():
    text = """
    def stage(c) = [CONV3-{c} -> RELU]*2
    INPUT[32x32x3] -> [stage(8) -> POOL2?(1,3)]*3 -> GAP -> FC-10   # pools after stages 1 and 3
    """
    est = archcalc.estimate(text)
    assert sum(r.op_type == "MaxPool" for r in est.layers_list) == 2
    assert est.graph.tensors[est.graph.outputs[0]].shape == (1, 10)
    assert [r.shape[2] for r in est.layers_list if r.op_type == "Conv"] == [32, 32, 16, 16, 16, 16]


def test_conv_before_bn_has_no_bias_and_bn_statistics_are_buffers():
    est = archcalc.estimate("INPUT[8x8x3] -> CONV3-4 -> BN -> RELU")
    assert est.totals.params == 3 * 3 * 3 * 4 + 2 * 4 and est.totals.buffers == 2 * 4


def fails(text: str) -> str:
    with pytest.raises(DSLError) as info:
        build(text, "net.arch")
    return str(info.value)


def test_error_window_does_not_tile():
    assert fails("INPUT[227x227x3] -> CONV11-96/s4/p1") == (
        "net.arch:1:21: CONV11-96/s4/p1: (W - F + 2P)/S + 1 = (227 - 11 + 2*1)/4 + 1 = 55.5 is not a whole number: "
        "the window does not tile the input; use /p2 or /s2, or /floor to drop the last partial window\n"
        "  INPUT[227x227x3] -> CONV11-96/s4/p1\n"
        "                      ^")


def test_error_concat_names_both_branches():
    assert fails("INPUT[32x32x3] ->\n  CONCAT(CONV3-8 | POOL2)").splitlines()[0] == (
        "net.arch:2:3: CONCAT: branch 1 gives 32x32x8 but branch 2 gives 16x16x3; the branches need the same "
        "spatial size")


def test_error_add_names_both_branches():
    assert fails("INPUT[32x32x3] -> ADD(CONV3-8 | ID)").splitlines()[0] == (
        "net.arch:1:19: ADD: branch 1 gives 32x32x8 but branch 2 gives 32x32x3; the branches need the same shape")


@pytest.mark.parametrize("text,message", [
    ("INPUT[32x32x3] -> CONVX-8", "net.arch:1:19: unknown layer 'CONVX'"),
    ("INPUT[32x32x3] -> CONV3-8 ->", "net.arch:1:27: unexpected end of the design; expected"),
    ("INPUT[32x32x3] -> blk(3)", "net.arch:1:19: no block named 'blk'"),
    ("INPUT[32x32x3] -> CONV3", "net.arch:1:19: CONV3: give the filter count, e.g. CONV3-64 (64 filters)"),
    ("INPUT[32x32x3] -> FC-10 -> CONV3-8", "net.arch:1:28: CONV3-8 needs a feature map"),
    ("def b(c) = CONV3-{d}\nINPUT[8x8x3] -> b(4)", "net.arch:1:12: unknown parameter {d} in CONV3-{d}"),
    ("INPUT[8x8x3] -> CONV3-8 % 2", "net.arch:1:25: unexpected character '%'"),
    ("CONV3-8", "net.arch:1:1: unexpected 'CONV3-8'; expected"),
])
def test_common_mistakes_are_positioned(text, message):
    assert fails(text).startswith(message)


VALID = ["INPUT[32x32x3] -> [CONV3-8 -> RELU]*2 -> POOL2 -> FC-10",
         "def b(c) = ADD(CONV3-{c} -> BN | ID) -> RELU\nINPUT[16x16x4] -> b(4) -> GAP -> FC-2",
         "INPUT[28x28x1] -> CONCAT(CONV1-4 | CONV3-4 | POOL3/s1/p1) -> POOL2?(1) -> FC-10"]
PIECES = ["INPUT[", "32x32x3]", "->", "CONV3-8", "POOL2", "FC-10", "[", "]", "*2", "(", ")", "|", "ADD(", "CONCAT(",
          "ID", "def", "b(c)", "=", "{c}", "?", "/s2", "/p0", "#", "\n", "RELU", "BN", "GAP", "0", "x"]


def _never_a_traceback(text):
    try:
        build(text, "fuzz.arch")
    except DSLError as exc:
        assert str(exc).startswith("fuzz.arch:") and ":" in str(exc).split(" ")[0]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), max_size=14).map(" ".join))
def test_fuzz_random_designs_give_positioned_errors(text):
    _never_a_traceback(text)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID), st.integers(0, 200), st.integers(0, 6), st.text(max_size=4))
def test_fuzz_mutated_designs_give_positioned_errors(base, at, cut, insert):
    at = at % (len(base) + 1)
    _never_a_traceback(base[:at] + insert + base[at + cut:])


def test_cli_estimate_inline_and_export(tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["estimate", "INPUT[32x32x3] -> CONV3-12 -> RELU -> POOL2 -> FC-10", "--format", "json"])
    assert out.exit_code == 0 and json.loads(out.output)["totals"]["params"] == 3 * 3 * 3 * 12 + 12 + 16 * 16 * 12 * 10 + 10
    bad = runner.invoke(main, ["estimate", "INPUT[32x32x3] -> CONV3-12/s2"])
    assert bad.exit_code == 2 and bad.output.startswith("error: <inline>:1:19: CONV3-12/s2")
    target = tmp_path / "lenet.onnx"
    done = runner.invoke(main, ["export", "lenet5", "-o", str(target)])
    assert done.exit_code == 0 and archcalc.estimate(target).totals.params == 61_706


def test_committed_notes_report_is_fresh():
    """reports/vgg16-notes-table.md is `archcalc estimate vgg16 --view notes --format markdown`."""
    from conftest import ROOT

    from archcalc.render.notes import render_notes

    committed = (ROOT / "reports" / "vgg16-notes-table.md").read_text()
    assert committed == render_notes(archcalc.estimate("vgg16"), "markdown"), "regenerate it: see the docstring"
