"""Training estimates against real PyTorch CPU steps, measured once and pinned here.

Measured with benchmarks/bench_training.py: torch 2.14.1 (+cu130 build, run on the CPU),
torchvision 0.29.1, this project's 2-core x86-64 machine (24 GiB), one thread, batch 8 of
3x224x224, torchvision models with random weights in training mode. Each step is the second of
two (optimizer state exists, gradients freed by zero_grad(set_to_none=True)), run in a fresh child
process with MALLOC_MMAP_THRESHOLD_=65536: the peak is the bytes of the tensors alive before the
step (weights, buffers, optimizer state, the batch) plus the rise of VmHWM over the step (reset
through /proc/self/clear_refs). Saved activations: one forward under
torch.autograd.graph.saved_tensors_hooks, each saved storage counted once, parameters and buffers
left out, the input batch (which the first conv saves) counted.

The estimates come from the weight-stripped training-mode exports in tests/fixtures/models (made by
tools/make_fixtures.py), so no torch is needed here.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import model_path

import archcalc
from archcalc.cli import main

# (fixture, optimizer): (measured peak, tensors alive before the step), bytes.
MEASURED_STEPS = {
    ("vgg16_train", "adam"): (3_040_433_760, 1_665_107_552),
    ("alexnet_train", "adam"): (1_284_191_776, 738_027_040),
    ("resnet50_train", "sgd"): (845_193_288, 107_257_928),
}
# fixture: bytes autograd saved in the forward pass (input batch included: 4,816,896).
MEASURED_SAVED = {"vgg16_train": 586_842_112, "alexnet_train": 29_929_472}
FC6 = 4096 * 25088  # VGG-16's largest parameter, elements


def _cpu(name: str, optimizer: str):
    return archcalc.estimate(model_path(name), batch=8).training_memory(optimizer, device="cpu", runtime="none")


@pytest.mark.parametrize("name,optimizer", sorted(MEASURED_STEPS))
def test_step_peak_and_rise_match_measured_pytorch_cpu_steps(name, optimizer):
    peak, resident = MEASURED_STEPS[(name, optimizer)]
    tm = _cpu(name, optimizer)
    assert tm.weights + tm.optimizer_state + tm.inputs == pytest.approx(resident, rel=1e-3)
    assert tm.total == pytest.approx(peak, rel=0.03)
    # The rise over what was resident is the stricter figure: the resident tensors cancel out.
    rise = tm.total - (tm.weights + tm.optimizer_state + tm.inputs)
    assert rise == pytest.approx(peak - resident, rel=0.05)


@pytest.mark.parametrize("name", sorted(MEASURED_SAVED))
def test_saved_activations_match_what_autograd_saved(name):
    """AlexNet was 18% short: the batch the first conv saves (4.8 MB, counted under inputs),
    dropout's CPU mask of floats, not bools, and AveragePool's saved input."""
    tm = _cpu(name, "sgd")
    assert tm.saved_inputs == 8 * 3 * 224 * 224 * 4
    assert tm.saved_activations + tm.saved_inputs == pytest.approx(MEASURED_SAVED[name], rel=0.005)


def test_cpu_adam_runs_per_tensor_and_cuda_adam_multi_tensor():
    """The Adam step of VGG-16 was 20% short on the CPU when priced as the multi-tensor form:
    torch 2.14 picks foreach only for CUDA (and xpu, mtia) parameters, and the per-tensor form
    holds sqrt(v) and its quotient of the 102.8M-element fc6 weight at once."""
    est = archcalc.estimate(model_path("vgg16_train"), batch=8)
    cpu, cuda = est.training_memory("adam", device="cpu"), est.training_memory("adam")
    assert cpu.step_temporaries == 2 * FC6 * 4
    assert cuda.step_temporaries == cuda.gradients  # one sqrt(v) list the size of every parameter
    assert est.training_memory("adam", impl="foreach", device="cpu").step_temporaries == cuda.step_temporaries
    # On CUDA dropout keeps bools: 3 bytes an element less for each of the two classifier dropouts.
    assert cpu.saved_activations - cuda.saved_activations == 3 * 8 * (4096 + 4096)


def test_cli_device_option():
    out = CliRunner().invoke(main, ["estimate", str(model_path("alexnet_train")), "--batch", "8", "--mode",
                                    "train", "--optimizer", "adam", "--device", "cpu", "--format", "json"])
    assert out.exit_code == 0, out.output
    assert '"device": "cpu"' in out.output
