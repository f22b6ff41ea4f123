"""Megatron-LM's own memory estimate (``--strategy '... megatron'``), against the function itself.

Each row's MB are what Megatron-LM's ``report_theoretical_memory``
(megatron/training/theoretical_memory_usage.py at commit d98e8a6, 2026-08-22) printed when run on
this CPU with the arguments a Megatron-LM run of that config would have: its hyperparameters from the
config (GQA as num_query_groups, SwiGLU, RMSNorm, untied embeddings, Mixtral's 8 experts of top-2
with moe_layer_freq 1), --disable-bias-linear, the vocabulary padded to 128 x tp, expert tensor
parallelism at tp and no expert parallelism, data parallelism the GPUs left.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from archcalc.analysis.plan import megatron
from archcalc.frontends.hf_config import hyperparameters, read_config

PUBLISHED = Path(__file__).parent / "fixtures" / "published"
# (config, GPUs, tp, pp, cp, virtual stages, sequence, micro-batch, micro-batches, distributed optimizer,
#  sequence parallel, selective recompute, (weight and optimizer, activation, total) MB as printed)
PRINTED = [
    ("llama2_13b", 64, 8, 1, 1, None, 4096, 1, 1, True, True, True, (11646.72, 2956.5, 14603.22)),
    ("llama2_70b", 256, 8, 4, 1, None, 4096, 1, 64, True, True, True, (15542.36, 10256.02, 25798.37)),
    ("llama3_8b", 16, 2, 1, 1, None, 8192, 1, 1, False, False, False, (68926.57, 24807.37, 93733.94)),
    ("llama3_70b", 128, 8, 4, 1, 5, 8192, 1, 32, True, True, True, (19496.83, 23588.84, 43085.67)),
    ("llama31_405b", 1024, 8, 16, 1, None, 8192, 1, 128, True, True, True, (24335.6, 62752.12, 87087.73)),
    ("mixtral_8x7b", 64, 2, 4, 1, None, 4096, 1, 16, True, True, True, (41991.1, 8224.06, 50215.16)),
    ("mixtral_8x7b", 8, 1, 1, 1, None, 4096, 2, 1, False, False, False, (801706.57, 37182.67, 838889.24)),
    ("llama2_70b", 64, 4, 2, 2, None, 8192, 1, 8, True, True, True, (74012.66, 40992.03, 115004.69)),
    ("llama3_8b", 8, 1, 2, 1, None, 8192, 2, 1, True, False, True, (34462.14, 36624.13, 71086.27)),
]


@pytest.mark.parametrize("config, gpus, tp, pp, cp, chunks, seq, mb, nmb, distopt, sp, selective, printed", PRINTED)
def test_megatron_estimate_equals_what_megatron_prints(config, gpus, tp, pp, cp, chunks, seq, mb, nmb, distopt, sp,
                                                       selective, printed):
    model = megatron.Transformer(**hyperparameters(read_config(PUBLISHED / f"{config}.json")))
    run = megatron.Run(gpus, tp, pp, cp, seq, mb, nmb, distopt, sp, selective, chunks)
    assert tuple(f"{x:.2f}" for x in megatron.theoretical_memory(model, run)) == tuple(f"{x:.2f}" for x in printed)


def test_the_plan_prints_it_for_a_megatron_strategy():
    from click.testing import CliRunner

    from archcalc.cli import main

    out = CliRunner().invoke(main, ["plan", str(PUBLISHED / "llama2_13b.json"), "--gpus", "64", "--nodes", "8",
                                    "--dim", "sequence=4096", "--global-batch", "8",
                                    "--strategy", "dp8 zero1 tp8 sp ckpt=selective megatron"])
    assert out.exit_code == 0, out.output
    assert "weight and optimizer=11646.72 MB, activation=2956.50 MB, total=14603.22 MB" in out.output


def test_megatron_runs_zero1_at_most():
    from archcalc.analysis.plan.gpu_memory import Strategy
    from archcalc.errors import InputError

    with pytest.raises(InputError, match="distributed optimizer is ZeRO-1"):
        Strategy(dp=8, zero=3, engine="megatron")


# Megatron-LM's compute_weight_and_optimizer_memory(verbose=True), run here on Mixtral 8x7B's arguments
# (as PRINTED's): "Number of parameters in most loaded shard in billions" at tensor-parallel 1, 2, 4.
MIXTRAL_SHARD = {1: 46.7028e9, 2: 23.3521e9, 4: 11.6772e9}


@pytest.mark.parametrize("tp", sorted(MIXTRAL_SHARD))
def test_a_tensor_parallel_rank_holds_its_share_of_the_experts(tp):
    """The experts split with the rest (Megatron-LM's expert tensor parallelism, its default): at TP 2
    a rank held 1.22B of a reduced Mixtral's 1.25B parameters before."""
    from archcalc.analysis.plan.gpu_memory import Strategy
    from archcalc.analysis.plan.planner import Planner
    from archcalc.frontends.sources import load_graph

    planner = Planner(load_graph(str(PUBLISHED / "mixtral_8x7b.json")), dims={"sequence": 128})
    s = Strategy(dp=8 // tp, tp=tp, sp=tp > 1)
    held = int(planner.layout(s, planner.stages(s, 1)[0]).elements[0])
    assert held == pytest.approx(MIXTRAL_SHARD[tp], rel=1e-3)
