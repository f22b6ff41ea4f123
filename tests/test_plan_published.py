"""The planner against published figures: the ZeRO paper's model states per GPU, DeepSpeed's
estimators' printed tables, and Korthikanti et al.'s activation formulas under tensor and
sequence parallelism and recomputation -- each computed by archcalc from a graph, never typed in."""

from __future__ import annotations

from pathlib import Path

import pytest
from plan_models import gpt_layers, one_matrix

from archcalc.analysis.plan import deepspeed as deepspeed_compat
from archcalc.analysis.plan.gpu_memory import Strategy, model_states
from archcalc.analysis.plan.params import layout
from archcalc.analysis.plan.pipeline import Stage
from archcalc.analysis.plan.planner import Planner
from archcalc.frontends.onnx_import import import_onnx

# Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models",
# Table 1: per-device memory of model states (GB) with mixed-precision Adam (K = 12), by DP degree:
# (Pos, Pos+g, Pos+g+p) for the 7.5B, 128B and 1T models.
ZERO_TABLE1 = {
    7.5e9: {
        1: (120, 120, 120),
        4: (52.5, 41.3, 30),
        16: (35.6, 21.6, 7.5),
        64: (31.4, 16.6, 1.88),
        256: (30.4, 15.4, 0.47),
        1024: (30.1, 15.1, 0.12),
    },
    128e9: {
        1: (2048, 2048, 2048),
        4: (896, 704, 512),
        16: (608, 368, 128),
        64: (536, 284, 32),
        256: (518, 263, 8),
        1024: (513, 257, 2),
    },
    1e12: {
        1: (16000, 16000, 16000),
        4: (7000, 5500, 4000),
        16: (4750, 2875, 1000),
        64: (4187, 2218, 250),
        256: (4046, 2054, 62.5),
        1024: (4011, 2013, 15.6),
    },
}


@pytest.mark.parametrize("psi", sorted(ZERO_TABLE1))
def test_zero_paper_table1(psi):
    planner = Planner(import_onnx(one_matrix(int(psi))), optimizer="adam", dtype="mixed")
    v = planner.view(1, False)
    for dp, printed in ZERO_TABLE1[psi].items():
        for stage, want in zip((1, 2, 3), printed):
            s = Strategy(dp=dp, zero=stage, engine="deepspeed")
            lay = layout(v.shaped, v.trained, planner.units, Stage(0, len(v.results), range(1), 1.0), dp, v.float_dtype)
            got = sum(model_states(s, planner.precision, lay).values()) / 1e9
            # At the table's printed precision: within one unit of its last digit (the paper rounds its
            # decimals and truncates its whole numbers: 257.75 is printed 257).
            assert abs(got - want) < 10 ** -_decimals(want), (psi, dp, stage, got)


def _decimals(x: float) -> int:
    text = f"{x:g}"
    return len(text.split(".")[1]) if "." in text else 0


# DeepSpeed's documentation (docs/_pages/memory.md, and the Hugging Face DeepSpeed guide) prints
# estimate_zero3_model_states_mem_needs_all_live for t5-small on one GPU: "60M total params, 16M
# largest layer params" (T5Model: 60,506,624 parameters; its shared embedding, 32,128 x 512 =
# 16,449,536, is the largest module), per CPU | per GPU in GiB:
T5_SMALL_ZERO3 = [
    ("cpu", "cpu", 1, 1.52, 0.06),
    ("cpu", "cpu", 0, 1.52, 0.06),
    ("none", "cpu", 1, 1.35, 0.17),
    ("none", "cpu", 0, 1.35, 0.17),
    ("none", "none", 1, 0.09, 1.08),
    ("none", "none", 0, 0.34, 1.08),
]


def test_deepspeed_zero3_estimator_printed_table():
    rows = deepspeed_compat.zero3_table(60_506_624, 32_128 * 512)
    got = [
        (
            r["offload_param"],
            r["offload_optimizer"],
            r["zero_init"],
            round(r["host"] / 2**30, 2),
            round(r["gpu"] / 2**30, 2),
        )
        for r in rows
    ]
    assert got == T5_SMALL_ZERO3


def test_deepspeed_zero2_estimator_formula():
    """estimate_zero2_model_states_mem_needs: 2 bytes a parameter on the GPU with the optimizer
    offloaded, else 4 + 16 / GPUs (deepspeed/runtime/zero/stage_1_and_2.py)."""
    assert deepspeed_compat.zero2(10**9, 8, 1, cpu_offload=True) == (int(10**9 * 32 * 1.5), 2 * 10**9)
    assert deepspeed_compat.zero2(10**9, 8, 2, cpu_offload=False) == (int(10**9 * 4 * 8 * 1.5), 4 * 10**9 + 10**9)


# Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models", section 4
# and table 2: activation bytes per transformer layer, 16-bit activations and 1-byte dropout masks.
def korthikanti(s, b, h, a, t=1, sp=False, mode="none") -> float:
    if mode == "full":
        return 2 * s * b * h / (t if sp else 1)  # only the layer's input is kept
    core = 5 * a * s / h if mode == "none" else 0  # selective recompute drops the 5as/h term
    if sp:
        return s * b * h / t * (34 + core)
    return s * b * h * (10 + 24 / t + core / t)


@pytest.mark.parametrize("s,h,a,b", [(512, 256, 8, 1), (256, 512, 16, 2), (1024, 256, 4, 1)])
def test_korthikanti_activations_per_layer(s, h, a, b):
    layers = 4
    planner = Planner(import_onnx(gpt_layers(layers, s, h, a)), optimizer="adam", device="cuda")
    x = 2 * s * b * h  # the first layer's input is the graph's input, held as an input and not saved
    for t in (1, 2, 4):
        for sp in (False, True) if t > 1 else (False,):
            view = planner.view(t, sp)
            # LayerNorm keeps its mean and inverse deviation (fp32, one per token) beside its input,
            # which the paper leaves out: two norms a layer.
            stats = layers * 2 * 2 * s * b * 4 // (t if sp else 1)
            for mode in ("none", "selective"):
                got = view.account(mode).saved.at(b)[-1]
                want = layers * korthikanti(s, b, h, a, t, sp, mode) - x // (t if sp else 1) + stats
                assert got == want, (t, sp, mode)
            # Full recompute: each layer keeps only its input (2sbh, the first one's being the graph
            # input); the layer being differentiated has its own tensors back.
            last = planner.units.units[-1].start
            full, none = view.account("full").saved.at(b), view.account("none").saved.at(b)
            assert full[-1] - (none[-1] - none[last - 1]) == (layers - 2) * korthikanti(s, b, h, a, t, sp, "full")


# torchtitan's published runs (docs/performance.md, 2024; its train_configs of the time give the
# sequence: 4096 for Llama 2, 8192 for Llama 3; benchmarks/llama3_h100_202412_torchtitan.md, Table 2,
# for context parallelism): FSDP2 over 64 A100-80GB (Llama 2 and 3) or 128 H100 of 94 GB (Llama 3.1
# 405B) or 8 H100 of 95 GiB, bf16 mixed precision, SDPA, the loss over fp32 logits. "selective op" is
# ckpt=op, "selective layer" ckpt=every2 (selective_ac_option = "2"); judged as engine=torchtitan
# (its last block not resharded, as its parallelize_llama.py has done since April 2024). Each: (config, card or budget,
# GPUs, strategy, local batch, sequence, ran). An OOM row ran out of memory at that local batch. The
# context-parallel rows ran with Float8 linears and torch.compile, which only lower what bf16 holds.
TORCHTITAN_RUNS = [
    ("llama2_13b", "A100-80GB", 64, "dp64 zero3", 2, 4096, True),
    ("llama2_13b", "A100-80GB", 64, "dp64 zero3 ckpt=every2", 2, 4096, True),
    ("llama2_13b", "A100-80GB", 64, "dp64 zero3 ckpt=op", 2, 4096, True),
    ("llama2_70b", "A100-80GB", 64, "dp64 zero3 ckpt=every2", 2, 4096, False),
    ("llama2_70b", "A100-80GB", 64, "dp64 zero3 ckpt=op", 2, 4096, False),
    ("llama2_70b", "A100-80GB", 64, "dp64 zero3 ckpt=op", 1, 4096, True),
    ("llama2_70b", "A100-80GB", 64, "dp64 zero3 ckpt=full", 2, 4096, True),
    ("llama3_8b", "A100-80GB", 64, "dp64 zero3 ckpt=every2", 1, 8192, True),
    ("llama3_8b", "A100-80GB", 64, "dp64 zero3 ckpt=op", 1, 8192, True),
    ("llama3_70b", "A100-80GB", 64, "dp64 zero3 ckpt=full", 1, 8192, True),
    ("llama31_405b", "94GB", 128, "dp128 zero3 ckpt=full", 2, 8192, False),  # "we do see OOM for 1D parallelism"
    ("llama31_405b", "94GB", 128, "dp16 zero3 tp8 sp ckpt=full", 2, 8192, True),
    ("llama3_8b", "95GiB", 8, "dp8 zero3 ckpt=full", 1, 32768, True),
    ("llama3_8b", "95GiB", 8, "dp4 cp2 zero3 ckpt=full", 1, 65536, True),
    ("llama3_8b", "95GiB", 8, "dp2 cp4 zero3 ckpt=full", 1, 131072, True),
    ("llama3_8b", "95GiB", 8, "dp1 cp8 zero3 ckpt=full", 1, 262144, True),
]


@pytest.mark.parametrize("config, card, gpus, strategy, local, sequence, ran", TORCHTITAN_RUNS)
def test_torchtitan_published_runs_fit_as_they_ran(config, card, gpus, strategy, local, sequence, ran):
    from pathlib import Path

    from archcalc.analysis.gpus import gpu
    from archcalc.analysis.plan.search import plan_result
    from archcalc.frontends.sources import load_graph
    from archcalc.units import parse_bytes

    path = Path(__file__).parent / "fixtures" / "published" / f"{config}.json"
    planner = Planner(load_graph(str(path)), dims={"sequence": sequence})
    capacity = parse_bytes(card) if card[0].isdigit() else gpu(card).capacity
    dp = int(strategy.split()[0][2:])
    row = plan_result(planner, capacity, gpus, max(gpus // 8, 1), global_batch=local * dp,
                      strategy=f"{strategy} torchtitan").rows[0]
    assert (row.fits and row.micro_batch == local) == ran, (row.total / 2**30, row.micro_batch)


def test_a_context_parallel_rank_holds_its_share_of_the_sequence():
    """Without context parallelism the 262,144-token run of torchtitan's Table 2 does not fit one H100
    at all; with cp8 every rank holds 32,768 tokens' worth, as the cp1 run does at that length."""
    from pathlib import Path

    from archcalc.analysis.plan.search import plan_result
    from archcalc.frontends.sources import load_graph
    from archcalc.units import parse_bytes

    path = str(Path(__file__).parent / "fixtures" / "published" / "llama3_8b.json")

    def total(sequence, strategy):
        planner = Planner(load_graph(path), dims={"sequence": sequence})
        dp = int(strategy.split()[0][2:])
        return plan_result(planner, parse_bytes("95GiB"), 8, 1, global_batch=dp, strategy=strategy).rows[0]

    whole, split = total(262144, "dp8 zero3 ckpt=full"), total(262144, "dp1 cp8 zero3 ckpt=full")
    assert not whole.fits and split.fits
    assert split.total < total(32768, "dp8 zero3 ckpt=full").total * 1.01


def test_a_16_bit_config_trains_in_mixed_precision_by_default():
    """Meta-Llama-3-8B (8,030,261,248 parameters, transformers' count of the meta-llama checkpoint)
    read from its bf16 config with no --dtype: the ZeRO paper's 16 bytes a parameter under mixed
    Adam (2 + 2 + 12), not bf16 Adam's 8."""
    from pathlib import Path

    import archcalc

    path = Path(__file__).parent / "fixtures" / "published" / "llama3_8b.json"
    tm = archcalc.estimate(str(path), dims={"sequence": 128}).training_memory("adam")
    states = tm.weights + tm.gradients + tm.master_weights + tm.optimizer_state
    assert tm.weights == 2 * 8_030_261_248 and states == 16 * 8_030_261_248


@pytest.mark.parametrize("config, strategy, own, ran", [
    ("llama2_13b", "dp64 zero3", 40, True),  # ran at local batch 2 with no checkpointing
    ("llama2_70b", "dp64 zero3 ckpt=op", 80, False),  # OOM at local batch 2 with op checkpointing
])
def test_the_largest_model_agrees_with_what_ran(config, strategy, own, ran):
    """The largest-model solve (plan --largest-model) at torchtitan's published settings (64 A100-80GB,
    sequence 4096, local batch 2, no accumulation): a run that fitted leaves the model's own depth
    within the answer, one that ran out of memory leaves it beyond."""
    from pathlib import Path

    from archcalc.analysis.gpus import gpu
    from archcalc.api import largest_model

    path = Path(__file__).parent / "fixtures" / "published" / f"{config}.json"
    found, layers = largest_model(path, gpu("A100-80GB").capacity, 64, 8, strategy, global_batch=128,
                                  micro_batches=1, dims={"sequence": 4096})
    assert layers == own and (found.layers >= own) == ran, found.layers
    assert found.row is not None and found.row.fits and found.row.micro_batch == 2


# torchtitan's multi-dimensional runs (benchmarks/llama3_h100_202412_torchtitan.md; H100 96 GB,
# sequence 8192 unless CP stretches it, full checkpointing, Float8 and torch.compile on, which only
# lower what bf16 eager holds): Table 4, Llama 3.1 70B on 256 GPUs, FSDP 32 x TP 8, local batch 16;
# Table 5, 405B on 512 GPUs, FSDP 8 x TP 8 x PP 8, local batch 32 (torchtitan's default of one
# micro-batch per stage: 8 of 4), 1F1B and interleaved; Table 6, 405B, TP 8 x PP 8 and FSDP x CP = 8,
# local batch 8 (8 micro-batches of 1) at 32K-262K tokens. Every one ran.
TORCHTITAN_ND_RUNS = [
    ("llama3_70b", 256, "dp32 zero3 tp8 sp ckpt=full", 16, 8192, 16),
    ("llama31_405b", 512, "dp8 zero3 tp8 sp pp8 1f1b micro8 ckpt=full", 32, 8192, 4),
    ("llama31_405b", 512, "dp8 zero3 tp8 sp pp8 interleaved x2 micro8 ckpt=full", 32, 8192, 4),
    ("llama31_405b", 512, "dp8 zero3 tp8 sp pp8 1f1b micro8 ckpt=full", 8, 32768, 1),
    ("llama31_405b", 512, "dp1 cp8 zero3 tp8 sp pp8 1f1b micro8 ckpt=full", 8, 262144, 1),
]


@pytest.mark.parametrize("config, gpus, strategy, local, sequence, micro", TORCHTITAN_ND_RUNS)
def test_torchtitan_multidimensional_runs_fit_as_they_ran(config, gpus, strategy, local, sequence, micro):
    """Each fits at its published local batch, split into the micro-batches the run used (a stated
    microN is run as stated, not re-solved)."""
    from archcalc.analysis.plan.search import plan_result
    from archcalc.frontends.sources import load_graph
    from archcalc.units import parse_bytes

    path = Path(__file__).parent / "fixtures" / "published" / f"{config}.json"
    planner = Planner(load_graph(str(path)), dims={"sequence": sequence})
    dp = int(strategy.split()[0][2:])
    row = plan_result(planner, parse_bytes("95GiB"), gpus, gpus // 8, global_batch=local * dp,
                      strategy=f"{strategy} torchtitan").rows[0]
    assert row.fits and row.micro_batch == micro and row.micro_batch * row.accumulation == local


def test_a_stated_micro_batch_count_that_does_not_split_the_share_is_refused():
    from archcalc.analysis.plan.search import plan_result
    from archcalc.errors import InputError
    from archcalc.frontends.sources import load_graph
    from archcalc.units import parse_bytes

    path = Path(__file__).parent / "fixtures" / "published" / "llama3_8b.json"
    planner = Planner(load_graph(str(path)), dims={"sequence": 1024})
    with pytest.raises(InputError, match="do not split into 3 micro-batches"):
        plan_result(planner, parse_bytes("95GiB"), 8, 1, global_batch=32, strategy="dp4 pp2 micro3")
