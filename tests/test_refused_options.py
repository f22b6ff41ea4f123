"""Options that would change nothing, or ask for what no engine runs, are refused with one line that
names the option and the fix -- never accepted and silently ignored."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import ROOT

from archcalc.cli import main

DESIGN = "TOKENS[64] -> EMBED-1000x64 -> [LN -> ATTN-4h -> LN -> MLP-256]*4 -> LN -> LMHEAD-1000"
LLAMA = ROOT / "tests" / "fixtures" / "hf_configs" / "llama.json"  # 8 heads, 2 KV heads


def refused(args, *needles):
    result = CliRunner().invoke(main, args)
    text = result.output.strip()
    assert result.exit_code == 2 and text.count("\n") == 0 and text.startswith("error: "), text
    for needle in needles:
        assert needle in text, text


@pytest.mark.parametrize("strategy,needle", [
    ("", "empty"), ("   ", "empty"), ("dp8 sp", "tpN"), ("dp8 offload=params", "zero3"),
    ("dp8 interleaved", "ppN"), ("dp4 pp2 interleaved x1000000", "units"), ("dp1 hybrid3", "--strategy"),
    ("dp2 tp3", "divide"),
])
def test_a_strategy_that_would_change_nothing(strategy, needle):
    gpus = {"dp1 hybrid3": "1", "dp2 tp3": "6"}.get(strategy, "8")
    refused(["plan", DESIGN, "--gpu", "H100-80GB", "--gpus", gpus, "--strategy", strategy], "--strategy", needle)


def test_an_empty_units_pattern():
    refused(["plan", DESIGN, "--gpu", "H100-80GB", "--gpus", "8", "--units", ""], "--units", "empty")


@pytest.mark.parametrize("tp,needle", [(3, "8 attention heads"), (16, "8 attention heads")])
def test_a_tensor_parallel_degree_the_heads_do_not_split_over(tp, needle):
    """vLLM refuses these at start-up (num_attention_heads % tensor_parallel_size)."""
    refused(["fit", str(LLAMA), "--mode", "serve", "--gpu", "A100-80GB", "--context", "1024", "--tp", str(tp)],
            f"--tp {tp}", needle)


def test_a_tensor_parallel_degree_that_divides_is_served():
    result = CliRunner().invoke(main, ["fit", str(LLAMA), "--mode", "serve", "--gpu", "A100-80GB", "--context",
                                       "1024", "--tp", "4"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("model", ["vgg16", "resnet50"])
def test_attention_is_a_configs_choice(model):
    """A design says its kernel per ATTN (/fused) and an ONNX file runs what it exports: --attention,
    which chooses what a config leaves open, is refused for them, as it is for serving."""
    out = CliRunner().invoke(main, ["estimate", model, "--attention", "sdpa"])
    assert out.exit_code == 2 and "is not a config.json" in out.output and "/fused" in out.output
    config = str(ROOT / "tests" / "fixtures" / "hf_configs" / "llama.json")
    served = CliRunner().invoke(main, ["fit", config, "--mode", "serve", "--gpu", "L4", "--context", "64",
                                       "--attention", "eager"])
    assert served.exit_code == 2 and "--attention" in served.output
