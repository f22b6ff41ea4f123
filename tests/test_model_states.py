"""One model-state arithmetic for `fit --mode train` and every rank of `plan`: bytes per trained
element as PyTorch holds them, at every --dtype and for every optimizer, and the one-GPU plan row
equal to fit's total."""

from __future__ import annotations

import pytest
from plan_models import one_matrix

from archcalc.analysis.estimate import analyse
from archcalc.analysis.memory.model_states import OPTIMIZER_SLOTS
from archcalc.analysis.plan.gpu_memory import Strategy, model_states
from archcalc.analysis.plan.params import layout
from archcalc.analysis.plan.pipeline import Stage
from archcalc.analysis.plan.planner import Planner
from archcalc.api import fit_spec
from archcalc.frontends.onnx_import import import_onnx
from archcalc.frontends.sources import load_graph

DTYPES = ("fp32", "fp16", "bf16", "mixed", "mixed-bf16")

# Tensors each PyTorch optimizer keeps per parameter, each ``torch.zeros_like(p)`` (or a clone of the
# gradient), read from torch/optim/*.py ``_init_group``: SGD with momentum=0 none, else
# ``momentum_buffer``; Adagrad ``sum``; RMSprop ``square_avg`` (+ ``momentum_buffer``, + ``grad_avg``
# when centered); Adam/AdamW ``exp_avg`` and ``exp_avg_sq`` (+ ``max_exp_avg_sq`` with amsgrad).
# The step count is a 0-d tensor on the host and takes no GPU bytes per element.
TORCH_STATE_TENSORS = {
    "sgd": 0, "momentum": 1, "nesterov": 1, "adagrad": 1, "rmsprop": 1, "rmsprop-momentum": 2,
    "rmsprop-centered": 2, "rmsprop-momentum-centered": 3, "adam": 2, "adamw": 2, "adam-amsgrad": 3,
    "adamw-amsgrad": 3,
}
# Bytes an element of (parameter, gradient, master weight, one state tensor): the module and its
# ``.grad`` in the training dtype; under mixed precision (Micikevicius et al. 2018; Rajbhandari et
# al. 2020, section 3.1: "2Psi + 2Psi + K Psi", K = 12 for Adam) an fp32 master copy and fp32 state.
ELEMENT_BYTES = {"fp32": (4, 4, 0, 4), "fp16": (2, 2, 0, 2), "bf16": (2, 2, 0, 2),
                 "mixed": (2, 2, 4, 4), "mixed-bf16": (2, 2, 4, 4)}


def torch_bytes(dtype: str, optimizer: str, elements: int) -> int:
    p, g, master, state = ELEMENT_BYTES[dtype]
    return elements * (p + g + master + TORCH_STATE_TENSORS[optimizer] * state)


def test_every_optimizer_is_priced():
    assert set(OPTIMIZER_SLOTS) == set(TORCH_STATE_TENSORS)


def test_zero_papers_sixteen_bytes_for_mixed_adam():
    assert torch_bytes("mixed", "adam", 1) == 2 + 2 + 12


@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_and_plan_price_model_states_as_pytorch_holds_them(dtype):
    params = 3000
    graph = import_onnx(one_matrix(params))
    est = analyse(graph, 1, dtype=dtype)
    for optimizer in OPTIMIZER_SLOTS:
        tm = est.training_memory(optimizer)
        fit = tm.weights + tm.master_weights + tm.gradients + tm.optimizer_state
        planner = Planner(graph, optimizer, dtype)
        planner.ests = (est, est)
        v = planner.view(1, False)
        lay = layout(v.shaped, v.trained, planner.units, Stage(0, len(v.results), range(1), 1.0), 1, v.float_dtype)
        plan = sum(model_states(Strategy(), planner.precision, lay).values())
        assert fit == plan == torch_bytes(dtype, optimizer, params), (dtype, optimizer)


# torchvision's resnet18: 11,689,512 parameters; its 20 BatchNorm2d layers hold 4,800 channels
# (64 + 4 x 64 + 4 x 128 + 128 + 4 x 256 + 256 + 4 x 512 + 512), a running mean and variance each.
RESNET18_PARAMS, RESNET18_RUNNING_STATS = 11_689_512, 2 * 4_800


@pytest.mark.parametrize("dtype", DTYPES)
def test_buffers_are_cast_with_the_module(dtype):
    """``Module.half()`` / ``.to(torch.bfloat16)`` cast floating-point buffers as well as parameters
    (torch/nn/modules/module.py ``_apply``): BatchNorm's running statistics cost what a weight does."""
    width = ELEMENT_BYTES[dtype][0]
    planner = Planner(load_graph("resnet18"), "adam", dtype)
    tm = planner.ests[0].training_memory("adam")
    assert tm.weights == (RESNET18_PARAMS + RESNET18_RUNNING_STATS) * width
    terms = planner.memory(Strategy(), 1)[0].terms
    assert terms["parameters"] + terms["buffers"] == tm.weights


@pytest.mark.parametrize("model", ["resnet18", "torchvision/vit_b_16"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_gpu_plan_is_the_fit_total_at_every_dtype(model, dtype):
    graph = load_graph(model)
    base = Planner(graph, "adam", dtype)
    for optimizer in ("sgd", "momentum", "adam", "adamw", "adam-amsgrad"):
        planner = Planner(graph, optimizer, dtype)
        planner.ests = base.ests  # one analysis per dtype: the optimizer prices, it does not analyse
        spec = fit_spec(model, 80 << 30, "train", optimizer, dtype)
        assert planner.memory(Strategy(), 2)[0].peak + planner.constant == spec.verdict(2).total, optimizer
