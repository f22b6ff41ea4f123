"""One training step under PyTorch's real distributed engines on CPU, measured per rank.

Why: archcalc's parallel estimates (data parallel, ZeRO, FSDP, checkpointing, pipeline and tensor
parallel) need a measured peer. Each (model, strategy, world size) runs in fresh processes launched
by torchrun on the gloo backend; every rank builds its model and optimizer, runs a warm-up step (so
Adam's state exists, then zero_grad(set_to_none=True)) and measures the second step three ways:

- the peak bytes of live tensors by torch.distributed._tools.mem_tracker.MemTracker (a
  TorchDispatchMode that follows every storage an op returns until it is freed), with its breakdown
  at the peak (parameters, buffers, gradients, optimizer state, activations, temporaries, other) and
  each category's own maximum;
- the bytes of the tensors alive right before the step (parameters or their shards, buffers,
  optimizer state, the inputs; each storage once), and all tensors the garbage collector can reach;
- the rise of the resident high-water mark over the step (reset through /proc/self/clear_refs, glibc
  told to return freed buffers at once with MALLOC_MMAP_THRESHOLD_), on the tracked step and on a
  third, untracked one.

Importable without side effects: build_model, make_batch, the setup_* functions and measure_step are
meant to be reused by the estimate side. torch and torchvision are benchmark-only.
Usage:
  python benchmarks/bench_parallel.py measure [--out benchmarks/results/parallel_gloo.json]
  torchrun --standalone --nproc_per_node 2 benchmarks/bench_parallel.py rank --model cnn --strategy ddp --out F
  python benchmarks/bench_parallel.py fake [--worlds 8,16,32]   (rank 0 alone, fake backend; parallel_fake.json)
  python benchmarks/compare_parallel.py                          (archcalc's estimates beside them; no torch)
  python benchmarks/bench_parallel.py onnx | saved
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"  # the measurements, committed
SCRATCH = Path(tempfile.gettempdir()) / "archcalc-bench-parallel"  # exports and probes, not committed
MODELS = ("cnn", "transformer")
STRATEGIES = ("ddp", "zero1", "fsdp2_reshard", "fsdp2_noreshard", "ckpt", "pp_1f1b", "pp_1f1b_ckpt", "tp",
              "tp_vocab", "pp_1f1b_lm", "ckpt_op", "fsdp2_mixed", "ckpt_uniform2", "ckpt_block2", "pp_fsdp",
              "tp_sp")
WORLDS = (2, 4)
# Rank 0 of larger jobs, alone in one process on the fake process group (`fake`): the strategies whose
# rank 0 is a rank like any other (no pipeline, whose stages differ, no checkpointed DDP, as DDP's).
FAKE_STRATEGIES = ("ddp", "zero1", "fsdp2_reshard", "fsdp2_noreshard", "tp")
FAKE_WORLDS = (8, 16, 32)
BATCH = 8  # samples per rank
MICRO_BATCHES, MICRO_BATCH = 8, 4  # the pipeline's global batch of 32
VOCAB, HIDDEN, SEQUENCE, HEAD_DIM, LAYERS, FFN = 4096, 256, 128, 64, 4, 1024
IMAGE = 64
LR = 1e-3


# ----------------------------------------------------------------------------------------------- models


class Attention(nn.Module):
    """Eager multi-head self-attention, no mask, no dropout. The head count is read from q's width so
    that tensor parallelism, which shards q, k and v by columns, leaves each rank its own heads."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(HIDDEN, HIDDEN) for _ in range(3))
        self.proj = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = self.q(x), self.k(x), self.v(x)
        heads = q.shape[-1] // HEAD_DIM
        q, k, v = (t.view(b, s, heads, HEAD_DIM).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / 8
        out = torch.softmax(scores, dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, s, heads * HEAD_DIM))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(HIDDEN, FFN), nn.GELU(), nn.Linear(FFN, HIDDEN)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """A pre-LN transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self):
        super().__init__()
        self.ln1, self.attn, self.ln2, self.mlp = nn.LayerNorm(HIDDEN), Attention(), nn.LayerNorm(HIDDEN), MLP()

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """A small GPT-like model of plain modules (token and learned position embeddings, 4 blocks, final
    LayerNorm, untied head), so every engine and the ONNX exporter see the same ops."""

    def __init__(self):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(VOCAB, HIDDEN), nn.Embedding(SEQUENCE, HIDDEN)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.ln_f, self.lm_head = nn.LayerNorm(HIDDEN), nn.Linear(HIDDEN, VOCAB, bias=False)

    def forward(self, ids):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


class GPTStage(nn.Module):
    """Part of a GPT for one pipeline stage: its units are names of GPT's children ("wte", "wpe",
    "ln_f", "lm_head") or blocks ("blocks.2"), contiguous, in model order."""

    def __init__(self, gpt: GPT, units: list[str]):
        super().__init__()
        self.first, self.last = "wte" in units, "lm_head" in units
        if self.first:
            self.wte, self.wpe = gpt.wte, gpt.wpe
        self.blocks = nn.ModuleList(gpt.blocks[int(u.split(".")[1])] for u in units if u.startswith("blocks."))
        if self.last:
            self.ln_f, self.lm_head = gpt.ln_f, gpt.lm_head

    def forward(self, x):
        if self.first:
            x = self.wte(x) + self.wpe(torch.arange(x.shape[1], device=x.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x)) if self.last else x


def build_model(name: str) -> nn.Module:
    """The model in training mode, float32, initialised from seed 0 (every rank builds the same one).

    cnn: torchvision's resnet18 (10 classes) as an nn.Sequential of its children, so pipeline stages
    are slices of it; transformer: GPT above."""
    torch.manual_seed(0)
    if name == "cnn":
        import torchvision

        r = torchvision.models.resnet18(weights=None, num_classes=10)
        children = [(n, getattr(r, n)) for n in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2",
                                                  "layer3", "layer4", "avgpool")]
        model = nn.Sequential(OrderedDict([*children[:9], ("flatten", nn.Flatten()), ("fc", r.fc)]))
    elif name == "transformer":
        model = GPT()
    else:
        raise ValueError(f"unknown model {name!r}")
    return model.float().train()


def blocks(model: nn.Module) -> list[nn.Module]:
    """The units FSDP wraps and checkpointing recomputes: resnet18's 8 BasicBlocks, GPT's 4 blocks."""
    if isinstance(model, GPT):
        return list(model.blocks)
    return [b for layer in ("layer1", "layer2", "layer3", "layer4") for b in getattr(model, layer)]


def make_batch(name: str, batch: int, seed: int = 1000) -> torch.Tensor:
    """A random input batch: images batch x 3 x 64 x 64, or token ids batch x 128."""
    g = torch.Generator().manual_seed(seed)
    if name == "cnn":
        return torch.randn(batch, 3, IMAGE, IMAGE, generator=g)
    return torch.randint(0, VOCAB, (batch, SEQUENCE), generator=g)


def loss_of(out: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """No labels: the mean of the output, so the loss adds next to nothing to the step."""
    return out.float().mean()


def pipeline_units(name: str, world: int) -> list[list[str]]:
    """Contiguous stages, the blocks split evenly (resnet18: 8 BasicBlocks, two to a layer; GPT: 4);
    a unit without blocks (stem, embeddings, pooling, head) joins its neighbour's stage."""
    if name == "cnn":
        units = [("conv1", 0), ("bn1", 0), ("relu", 0), ("maxpool", 0), ("layer1", 2), ("layer2", 2),
                 ("layer3", 2), ("layer4", 2), ("avgpool", 0), ("flatten", 0), ("fc", 0)]
    else:
        units = [("wte", 0), ("wpe", 0), *((f"blocks.{i}", 1) for i in range(LAYERS)), ("ln_f", 0), ("lm_head", 0)]
    total = sum(n for _, n in units)
    stages: list[list[str]] = [[] for _ in range(world)]
    seen, current = 0, 0
    for unit, n in units:
        if n:
            current = min(world - 1, seen * world // total)
            if (seen * world) % total and seen * world // total != (seen + n - 1) * world // total:
                raise ValueError(f"{unit} would straddle two stages at world {world}")
            seen += n
        stages[current].append(unit)
    return stages


# ----------------------------------------------------------------------------------------------- strategies


@dataclass
class Run:
    """One rank's training setup: `step` runs forward, backward and the optimizer step."""

    module: nn.Module  # what the tracker follows (the wrapped model, or this rank's stage)
    optimizer: torch.optim.Optimizer
    step: Callable[[], None]
    inputs: list[torch.Tensor]
    params: list[nn.Parameter]  # this rank's parameters (DTensor shards included)
    info: dict = field(default_factory=dict)
    extra_optimizers: list[torch.optim.Optimizer] = field(default_factory=list)


def _data_step(module, optimizer, x):
    def step():
        loss_of(module(x)).backward()
        optimizer.step()

    return step


def _whole(model: nn.Module) -> dict:
    """The whole model's parameter count, taken before it is sharded or split (keeping a second,
    unsplit copy around would distort the memory measured)."""
    params = list(model.parameters())
    return {"param_tensors": len(params), "param_elements": sum(p.numel() for p in params)}


def _adam(params, **kw):
    return torch.optim.Adam(params, lr=LR, **kw)


def setup_single(name: str, rank: int, world: int) -> Run:
    model = build_model(name)
    opt, x = _adam(model.parameters()), make_batch(name, BATCH)
    return Run(model, opt, _data_step(model, opt, x), [x], list(model.parameters()), _whole(model))


def _ddp(model):
    from torch.nn.parallel import DistributedDataParallel

    kwargs = {"bucket_cap_mb": 25}
    return DistributedDataParallel(model, **kwargs), kwargs


def setup_ddp(name: str, rank: int, world: int) -> Run:
    model = build_model(name)
    ddp, kwargs = _ddp(model)
    opt, x = _adam(ddp.parameters()), make_batch(name, BATCH, 1000 + rank)
    return Run(ddp, opt, _data_step(ddp, opt, x), [x], list(model.parameters()),
               {**_whole(model), "ddp_kwargs": kwargs})


def setup_zero1(name: str, rank: int, world: int) -> Run:
    """DDP with Adam's state partitioned by ZeroRedundancyOptimizer (which assigns whole tensors to
    ranks, largest first, so the partition is uneven); the partition is recorded."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    model = build_model(name)
    ddp, kwargs = _ddp(model)
    opt = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=torch.optim.Adam, lr=LR)
    x = make_batch(name, BATCH, 1000 + rank)
    mine = [p for g in opt.optim.param_groups for p in g["params"]]
    info = {**_whole(model), "ddp_kwargs": kwargs, "zero_local_param_tensors": len(mine),
            "zero_local_param_elements": sum(p.numel() for p in mine)}
    return Run(ddp, opt, _data_step(ddp, opt, x), [x], list(model.parameters()), info, [opt.optim])


def _mesh(world: int):
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", (world,))


def _setup_fsdp2(name: str, rank: int, world: int, reshard: bool, mixed: bool = False) -> Run:
    """fully_shard on each block, then on the root; plain float32, or (``mixed``) torchtitan's
    MixedPrecisionPolicy: bf16 compute, fp32 reduction."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    model, mesh = build_model(name), _mesh(world)
    whole = _whole(model)
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed else None
    kw = {"mp_policy": policy} if policy else {}
    for b in blocks(model):
        fully_shard(b, mesh=mesh, reshard_after_forward=reshard, **kw)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard, **kw)
    opt, x = _adam(model.parameters()), make_batch(name, BATCH, 1000 + rank)
    fsdp_kwargs = {"reshard_after_forward": reshard, **({"mp_policy": "bf16/fp32"} if mixed else {})}
    info = {**whole, "fsdp_kwargs": fsdp_kwargs, "fsdp_units": "each block, then the root"}
    if mixed:  # trained as torchtitan trains a language model: its cross-entropy, the logits deleted first
        target = make_batch(name, BATCH, 2000 + rank)
        return Run(model, opt, _language_step(model, opt, x, target), [x, target], list(model.parameters()),
                   {**info, "loss": "cross-entropy over float32 logits"})
    return Run(model, opt, _data_step(model, opt, x), [x], list(model.parameters()), info)


def _language_step(module, optimizer, x, target, context=contextlib.nullcontext):
    """A step as torchtitan trains a language model: the cross-entropy, the logits deleted before
    the backward; ``context``: around the forward and backward (``loss_parallel``)."""
    def step():
        with context():
            pred = module(x)
            loss = cross_entropy(pred, target)
            del pred
            loss.backward()
        optimizer.step()

    return step


setup_fsdp2_reshard = functools.partial(_setup_fsdp2, reshard=True)
setup_fsdp2_noreshard = functools.partial(_setup_fsdp2, reshard=False)
setup_fsdp2_mixed = functools.partial(_setup_fsdp2, reshard=True, mixed=True)


def setup_ckpt(name: str, rank: int, world: int) -> Run:
    """DDP with every block's forward run under torch.utils.checkpoint (non-reentrant)."""
    model = build_model(name)
    _checkpoint_blocks(model)
    ddp, kwargs = _ddp(model)
    opt, x = _adam(ddp.parameters()), make_batch(name, BATCH, 1000 + rank)
    info = {**_whole(model), "ddp_kwargs": kwargs, "checkpoint": "each block, use_reentrant=False"}
    return Run(ddp, opt, _data_step(ddp, opt, x), [x], list(model.parameters()), info)


def setup_ckpt_op(name: str, rank: int, world: int) -> Run:
    """DDP with every block under torchtitan's selective op policy (``op_policy``)."""
    model = build_model(name)
    _checkpoint_blocks(model, selective=True)
    ddp, kwargs = _ddp(model)
    opt, x = _adam(ddp.parameters()), make_batch(name, BATCH, 1000 + rank)
    info = {**_whole(model), "ddp_kwargs": kwargs,
            "checkpoint": "each block, use_reentrant=False, torchtitan's SelectiveAC op policy"}
    return Run(ddp, opt, _data_step(ddp, opt, x), [x], list(model.parameters()), info)


def setup_ckpt_megatron(name: str, rank: int, world: int, method: str) -> Run:
    """DDP with the GPT's blocks recomputed as Megatron-LM's ``_checkpointed_forward`` does with
    --recompute-num-layers 2: ``uniform``, blocks 0-1 and 2-3 each one checkpoint; ``block``, blocks
    0 and 1 each their own checkpoint, 2 and 3 stored."""
    from torch.utils.checkpoint import checkpoint

    if name != "transformer":
        raise ValueError("Megatron-LM's recompute methods are defined for the transformer only")
    model = build_model(name)
    bs = list(model.blocks)

    def run(group):
        def forward(x):
            for b in group:
                x = b(x)
            return x
        return forward

    groups = [bs[0:2], bs[2:4]] if method == "uniform" else [[bs[0]], [bs[1]], [bs[2]], [bs[3]]]
    recomputed = [True, True] if method == "uniform" else [True, True, False, False]

    def forward(ids):
        x = model.wte(ids) + model.wpe(torch.arange(ids.shape[1], device=ids.device))
        for group, again in zip(groups, recomputed):
            x = checkpoint(run(group), x, use_reentrant=False) if again else run(group)(x)
        return model.lm_head(model.ln_f(x))

    model.forward = forward
    ddp, kwargs = _ddp(model)
    opt, x = _adam(ddp.parameters()), make_batch(name, BATCH, 1000 + rank)
    info = {**_whole(model), "ddp_kwargs": kwargs,
            "checkpoint": f"Megatron-LM --recompute-method {method}, 2 layers"}
    return Run(ddp, opt, _data_step(ddp, opt, x), [x], list(model.parameters()), info)


def op_policy():
    """torchtitan's SelectiveAC policy (torchtitan/distributed/activation_checkpoint.py): the outputs of
    compute-intensive ops kept (get_default_op_list's: mm, addmm, bmm, convolution, the SDPA kernels),
    every second mm recomputed, counted per block invocation."""
    from collections import defaultdict

    from torch._functorch.partitioners import get_default_op_list
    from torch.utils.checkpoint import CheckpointPolicy

    kept = {op.default for op in get_default_op_list().compute_intensive_ops}
    meta: dict = defaultdict(int)

    def policy(ctx, func, *args, **kwargs):
        key = "recompute" if ctx.is_recompute else "forward"
        if func == torch.ops.aten.mm.default:
            meta[key] += 1
        if func in kept and not (func == torch.ops.aten.mm.default and meta[key] % 2 == 0):
            return CheckpointPolicy.MUST_SAVE
        return CheckpointPolicy.PREFER_RECOMPUTE

    return policy


def _checkpoint_blocks(model: nn.Module, selective: bool = False) -> None:
    """Every block's forward run under torch.utils.checkpoint (non-reentrant), whole or ``selective``
    (``op_policy``)."""
    from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts

    extra = {"context_fn": lambda: create_selective_checkpoint_contexts(op_policy())} if selective else {}
    for b in blocks(model):
        b.forward = functools.partial(checkpoint, b.forward, use_reentrant=False, **extra)


def cross_entropy(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The language model's loss as torchtitan takes it: over the logits upcast to float32."""
    return torch.nn.functional.cross_entropy(out.flatten(0, 1).float(), target.flatten())


def setup_pp_1f1b(name: str, rank: int, world: int, checkpointed: bool = False, language: bool = False) -> Run:
    """One stage per rank, Schedule1F1B over 8 micro-batches of 4; the first stage holds the global
    batch, the last a dummy target (loss_of ignores it); ``checkpointed``: every block recomputed;
    ``language``: the GPT trained as torchtitan pipelines one, the cross-entropy against random
    tokens per micro-batch and no outputs kept (``step(..., return_outputs=False)``)."""
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B

    model = build_model(name)
    if checkpointed:
        _checkpoint_blocks(model)
    units = pipeline_units(name, world)[rank]
    if name == "cnn":
        stage_mod = nn.Sequential(OrderedDict((u, getattr(model, u)) for u in units))
    else:
        stage_mod = GPTStage(model, units)
    stage = PipelineStage(stage_mod, rank, world, torch.device("cpu"))
    schedule = Schedule1F1B(stage, n_microbatches=MICRO_BATCHES, loss_fn=cross_entropy if language else loss_of)
    opt = _adam(stage_mod.parameters())
    batch = MICRO_BATCHES * MICRO_BATCH
    x = make_batch(name, batch) if rank == 0 else None
    target = None
    if rank == world - 1:
        target = make_batch(name, batch, 2000) if language else torch.zeros(batch)
    kept = {"return_outputs": False} if language else {}

    def step():
        if rank == 0:
            schedule.step(x, **kept)
        elif rank == world - 1:
            schedule.step(target=target, **kept)
        else:
            schedule.step(**kept)
        opt.step()

    info = {**_whole(model), "stage_units": units, "all_stage_units": pipeline_units(name, world),
            "schedule": "Schedule1F1B", "micro_batches": MICRO_BATCHES, "micro_batch": MICRO_BATCH,
            "global_batch": batch, **({"checkpoint": "each block, use_reentrant=False"} if checkpointed else {})}
    inputs = [t for t in (x, target) if t is not None]
    return Run(stage_mod, opt, step, inputs, list(stage_mod.parameters()), info)


def setup_pp_fsdp(name: str, rank: int, world: int) -> Run:
    """torchtitan's 2-D pipeline: two stages, each FSDP2-sharded over the world's other dimension
    (``world // 2`` data-parallel ranks), built as torchtitan builds them under PP --
    ``reshard_after_forward=False``, its MixedPrecisionPolicy (bf16 compute, fp32 reduce) -- and run
    by Schedule1F1B over 8 micro-batches of 4 of the GPT trained on its cross-entropy; PipelineStage
    turns resharding after backward and gradient sync off for every micro-batch but the last."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B

    if name != "transformer":
        raise ValueError("pp_fsdp trains the GPT as a language model")
    pp, dp = 2, world // 2
    mesh = init_device_mesh("cpu", (pp, dp), mesh_dim_names=("pp", "dp"))
    index, replica = rank // dp, rank % dp
    model = build_model(name)
    units = pipeline_units(name, pp)[index]
    stage_mod = GPTStage(model, units)
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for b in stage_mod.blocks:
        fully_shard(b, mesh=mesh["dp"], reshard_after_forward=False, mp_policy=policy)
    fully_shard(stage_mod, mesh=mesh["dp"], reshard_after_forward=False, mp_policy=policy)
    stage = PipelineStage(stage_mod, index, pp, torch.device("cpu"), group=mesh["pp"].get_group())
    schedule = Schedule1F1B(stage, n_microbatches=MICRO_BATCHES, loss_fn=cross_entropy)
    opt = _adam(stage_mod.parameters())
    batch = MICRO_BATCHES * MICRO_BATCH
    x = make_batch(name, batch, 1000 + replica) if index == 0 else None
    target = make_batch(name, batch, 2000 + replica) if index == pp - 1 else None

    def step():
        if index == 0:
            schedule.step(x, return_outputs=False)
        else:
            schedule.step(target=target, return_outputs=False)
        opt.step()

    info = {**_whole(model), "stage": index, "stage_units": units, "all_stage_units": pipeline_units(name, pp),
            "schedule": "Schedule1F1B", "micro_batches": MICRO_BATCHES, "micro_batch": MICRO_BATCH,
            "global_batch": batch, "fsdp_kwargs": {"reshard_after_forward": False, "mp_policy": "bf16/fp32"},
            "mesh": {"pp": pp, "dp": dp}}
    inputs = [t for t in (x, target) if t is not None]
    return Run(stage_mod, opt, step, inputs, list(stage_mod.parameters()), info)


def tp_plan() -> dict:
    """Megatron-style: q, k, v and fc1 split by output columns, proj and fc2 by input rows."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    col, row = ColwiseParallel, RowwiseParallel
    return {"attn.q": col(), "attn.k": col(), "attn.v": col(), "attn.proj": row(), "mlp.fc1": col(),
            "mlp.fc2": row()}


def setup_tp(name: str, rank: int, world: int) -> Run:
    """Tensor parallel within every GPT block; embeddings, LayerNorms and the head stay plain,
    replicated tensors; every rank runs the same batch of 8."""
    from torch.distributed.tensor.parallel import parallelize_module

    if name != "transformer":
        raise ValueError("tp is defined for the transformer only")
    if (HIDDEN // HEAD_DIM) % world:  # Attention reads its head count from its shard of q
        raise ValueError(f"tp over {world} ranks cannot split the {HIDDEN // HEAD_DIM} heads evenly")
    model, mesh = build_model(name), _mesh(world)
    whole = _whole(model)
    for b in model.blocks:
        parallelize_module(b, mesh, tp_plan())
    opt, x = _adam(model.parameters()), make_batch(name, BATCH)
    info = {**whole, "tp_plan": {k: type(v).__name__ for k, v in tp_plan().items()}, "adam_kwargs": {"lr": LR}}
    return Run(model, opt, _data_step(model, opt, x), [x], list(model.parameters()), info)


def setup_tp_sp(name: str, rank: int, world: int) -> Run:
    """Tensor and sequence parallel as torchtitan's DTensor plan runs a block: the norms on the
    sequence's shard (SequenceParallel), the attention's and MLP's inputs all-gathered to the whole
    sequence (PrepareModuleInput Shard(1) -> Replicate) for the column-parallel q, k, v and fc1, the
    row-parallel proj and fc2 reduce-scattered back to the shard (output_layouts=Shard(1)); the
    residual stream a sequence shard between them. The embeddings, the final norm and the head stay
    plain: the first block's input is split, the final norm's gathered."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    if name != "transformer":
        raise ValueError("tp_sp is defined for the transformer only")
    model, mesh = build_model(name), _mesh(world)
    whole = _whole(model)
    gather = functools.partial(PrepareModuleInput, input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),),
                               use_local_output=True)
    plan = {"ln1": SequenceParallel(), "attn": gather(), "attn.q": ColwiseParallel(), "attn.k": ColwiseParallel(),
            "attn.v": ColwiseParallel(), "attn.proj": RowwiseParallel(output_layouts=Shard(1)),
            "ln2": SequenceParallel(), "mlp": gather(), "mlp.fc1": ColwiseParallel(),
            "mlp.fc2": RowwiseParallel(output_layouts=Shard(1))}
    for b in model.blocks:
        parallelize_module(b, mesh, plan)
    parallelize_module(model, mesh, {
        "blocks.0": PrepareModuleInput(input_layouts=(Replicate(),), desired_input_layouts=(Shard(1),),
                                       use_local_output=True),
        "ln_f": gather()})
    opt, x = _adam(model.parameters()), make_batch(name, BATCH)
    info = {**whole, "tp_plan": {k: type(v).__name__ for k, v in plan.items()}, "adam_kwargs": {"lr": LR}}
    return Run(model, opt, _data_step(model, opt, x), [x], list(model.parameters()), info)


def setup_tp_vocab(name: str, rank: int, world: int) -> Run:
    """Tensor parallel as torchtitan runs a language model: every block as ``tp``, the token
    embedding split by the vocabulary (RowwiseParallel), the head by output columns into logits left
    sharded on the vocabulary (ColwiseParallel to Shard(-1)), and the loss, the cross-entropy over the
    float32 logits against random targets, under ``loss_parallel``."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        loss_parallel,
        parallelize_module,
    )

    model, mesh = build_model(name), _mesh(world)
    whole = _whole(model)
    for b in model.blocks:
        parallelize_module(b, mesh, tp_plan())
    parallelize_module(model, mesh, {"wte": RowwiseParallel(input_layouts=Replicate()),
                                     "lm_head": ColwiseParallel(output_layouts=Shard(-1), use_local_output=False)})
    opt, x = _adam(model.parameters()), make_batch(name, BATCH)
    target = make_batch(name, BATCH, 2000)
    step = _language_step(model, opt, x, target, loss_parallel)

    info = {**whole, "tp_plan": {k: type(v).__name__ for k, v in tp_plan().items()}, "adam_kwargs": {"lr": LR},
            "vocabulary": "wte RowwiseParallel, lm_head ColwiseParallel(Shard(-1)), loss_parallel"}
    return Run(model, opt, step, [x, target], list(model.parameters()), info)


SETUPS: dict[str, Callable[[str, int, int], Run]] = {
    "single": setup_single, "ddp": setup_ddp, "zero1": setup_zero1, "fsdp2_reshard": setup_fsdp2_reshard,
    "fsdp2_noreshard": setup_fsdp2_noreshard, "ckpt": setup_ckpt, "pp_1f1b": setup_pp_1f1b,
    "pp_1f1b_ckpt": functools.partial(setup_pp_1f1b, checkpointed=True), "tp": setup_tp,
    "tp_vocab": setup_tp_vocab, "pp_1f1b_lm": functools.partial(setup_pp_1f1b, language=True),
    "ckpt_op": setup_ckpt_op, "fsdp2_mixed": setup_fsdp2_mixed,
    "ckpt_uniform2": functools.partial(setup_ckpt_megatron, method="uniform"),
    "ckpt_block2": functools.partial(setup_ckpt_megatron, method="block"),
    "pp_fsdp": setup_pp_fsdp, "tp_sp": setup_tp_sp,
}


# ----------------------------------------------------------------------------------------------- measuring


def _storages(t: torch.Tensor) -> list[torch.UntypedStorage]:
    """The storages behind a tensor; a DTensor (or other wrapper subclass) is its local tensors."""
    from torch.distributed._tools.common_utils import get_untyped_storages

    return list(get_untyped_storages(t))


def _bytes(tensors, seen: set[int]) -> int:
    """Bytes of the storages behind `tensors` not yet in `seen` (each storage counted once)."""
    total = 0
    for t in tensors:
        for st in _storages(t):
            if st._cdata not in seen:
                seen.add(st._cdata)
                total += st.nbytes()
    return total


def _optimizer_tensors(optimizers) -> list[torch.Tensor]:
    return [v for o in optimizers for s in o.state.values() for v in s.values() if isinstance(v, torch.Tensor)]


def live_bytes(run: Run) -> dict:
    """The tensors alive right before the step, by role, each storage once (DDP's buckets as its
    logging data sizes them); `gc_other` is what else the garbage collector reaches (e.g. pipeline
    buffers, FSDP's padded shards)."""
    seen: set[int] = set()
    out = {
        "parameters": _bytes(run.params, seen),
        "buffers": _bytes(run.module.buffers(), seen),
        "gradients": _bytes([p.grad for p in run.params if p.grad is not None], seen),
        "optimizer": _bytes(_optimizer_tensors([run.optimizer, *run.extra_optimizers]), seen),
        "inputs": _bytes(run.inputs, seen),
    }
    logging_data = getattr(run.module, "_get_ddp_logging_data", None)
    if logging_data:  # DDP's gradient buckets: held by its C++ reducer, out of the collector's sight
        sizes = str(logging_data().get("bucket_sizes", ""))
        out["ddp_buckets"] = sum(int(n) for n in sizes.replace(" ", "").split(",") if n)
    out["total"] = sum(out.values())
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        objs = [o for o in gc.get_objects() if isinstance(o, torch.Tensor) and not isinstance(o, nn.Parameter)]
    out["gc_other"] = _bytes((o for o in objs if not o.is_meta), seen)
    out["gc_total"] = out["total"] + out["gc_other"]
    return out


def _status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in bytes."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def _reset_hwm() -> int:
    """Resets the resident high-water mark to the current RSS (kernel >= 4.0) and returns that RSS."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status()["VmRSS"]


def _peak_tracker():
    """MemTracker, told to keep each category's own maximum and the peak of each phase (forward,
    backward, optimizer step: an optimizer's step hooks mark the last, nested steps such as
    ZeroRedundancyOptimizer's inner Adam included), and to let a root module run more than once in
    a step (a pipeline stage runs once per micro-batch; MemTracker refuses that as "multiple
    iterative calls", so the earlier call's module statistics are dropped; the totals, which are
    what is measured, are unaffected)."""
    from torch.distributed._tools.mem_tracker import MemTracker
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    class PeakTracker(MemTracker):
        def __init__(self):
            super().__init__()
            self.category_max: dict[str, int] = {}
            self.phase_peak: dict[str, dict[str, int]] = {}
            self._opt_depth = 0
            self._phase_hooks: tuple = ()

        def _update_peak_stats(self, peak_state) -> None:
            super()._update_peak_stats(peak_state)
            snap = _snapshot(self._curr_mem_snap)
            for k, v in snap.items():
                self.category_max[k] = max(self.category_max.get(k, 0), v)
            phase = "optimizer" if self._opt_depth else "backward" if self._mod_tracker.is_bw else "forward"
            if snap.get("Total", 0) > self.phase_peak.get(phase, {}).get("Total", -1):
                self.phase_peak[phase] = snap

        def _pre_fw_hook(self, module, inputs) -> None:
            if module in self.memory_tracking and not self._mod_tracker.is_bw:
                fqn = self._mod_tracker.get_known_fqn(module)
                if set(self._mod_tracker.parents) - {fqn} == {"Global"}:
                    del self.memory_tracking[module]
            super()._pre_fw_hook(module, inputs)

        def __enter__(self):
            def enter(*_):
                self._opt_depth += 1

            def leave(*_):
                self._opt_depth -= 1

            self._phase_hooks = (register_optimizer_step_pre_hook(enter), register_optimizer_step_post_hook(leave))
            return super().__enter__()

        def __exit__(self, *args) -> None:
            super().__exit__(*args)
            for h in self._phase_hooks:
                h.remove()

    return PeakTracker()


def _snapshot(snap: dict) -> dict[str, int]:
    """A MemTracker snapshot (device -> category -> bytes) for the CPU, with plain string keys."""
    dev = next(iter(snap.values()), {})
    return {getattr(k, "value", k): v for k, v in dev.items()}


def _barrier():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _fsdp_breakdown(run: Run) -> dict | None:
    """For an FSDP2 model, one more step under FSDPMemTracker, MemTracker's subclass that knows
    FSDP2's own buffers: its peak split into sharded and unsharded parameters and gradients,
    all-gather and reduce-scatter buffers (MemTracker counts those as parameters and temporaries).
    Not under a pipeline: FSDPMemTracker refuses a module called once per micro-batch."""
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(run.module, FSDPModule) or "schedule" in run.info:
        return None
    gc.collect()
    _barrier()
    tracker = FSDPMemTracker(run.module, run.optimizer)
    tracker.track_inputs(tuple(run.inputs))
    with tracker:
        run.step()
    run.optimizer.zero_grad(set_to_none=True)
    return _snapshot(tracker.get_tracker_snapshot("peak"))


def measure_step(run: Run) -> dict:
    """Warm-up step, then the measured second step (tracker and resident high-water mark), then a
    third step with the high-water mark only (the tracker's own bookkeeping left out); for FSDP2 a
    fourth, under FSDPMemTracker."""
    t0 = time.perf_counter()
    run.step()
    run.optimizer.zero_grad(set_to_none=True)
    warm_s = time.perf_counter() - t0
    before = live_bytes(run)
    tracker = _peak_tracker()
    tracker.track_external(run.module, run.optimizer, *run.extra_optimizers, *run.inputs)
    at_entry = _snapshot(tracker.get_tracker_snapshot())
    gc.collect()
    _barrier()
    rss0 = _reset_hwm()
    t0 = time.perf_counter()
    with tracker:
        run.step()
    step_s = time.perf_counter() - t0
    hwm = _status()["VmHWM"]
    peak = _snapshot(tracker.get_tracker_snapshot("peak"))
    run.optimizer.zero_grad(set_to_none=True)
    gc.collect()
    _barrier()
    rss1 = _reset_hwm()
    run.step()
    hwm_untracked = _status()["VmHWM"]
    run.optimizer.zero_grad(set_to_none=True)
    fsdp = _fsdp_breakdown(run)
    return {
        "tracker": "torch.distributed._tools.mem_tracker.MemTracker",
        "peak_bytes": peak.get("Total", 0),
        "peak_breakdown": peak,
        "category_max": tracker.category_max,
        "phase_peak": tracker.phase_peak,
        "tracker_at_entry": at_entry,
        "before_step": before,
        "vmrss_before": rss0,
        "vmhwm_rise": hwm - rss0,
        "vmhwm_rise_untracked": hwm_untracked - rss1,
        **({"fsdp_tracker": "torch.distributed._tools.fsdp2_mem_tracker.FSDPMemTracker",
            "fsdp_peak_breakdown": fsdp} if fsdp else {}),
        "warmup_seconds": round(warm_s, 3),
        "step_seconds": round(step_s, 3),
    }


def _param_counts(run: Run) -> dict:
    seen: set[int] = set()
    local_bytes = _bytes(run.params, seen)
    local = 0
    for p in run.params:
        to_local = getattr(p, "to_local", None)
        local += (to_local() if to_local else p).numel()
    return {"local_param_tensors": len(run.params), "local_param_elements": local,
            "local_param_bytes": local_bytes}


def rank_main(model: str, strategy: str, out: Path) -> None:
    """One rank under torchrun (or alone for "single"): set up, measure, write this rank's JSON row."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    if strategy != "single":
        dist.init_process_group("gloo")
    row = _measured_row(model, strategy, world, rank)
    Path(f"{out}.rank{rank}").write_text(json.dumps(row, indent=1))
    if dist.is_initialized():
        dist.destroy_process_group()


def _measured_row(model: str, strategy: str, world: int, rank: int,
                  prepare: Callable[[Run], None] | None = None, **extra) -> dict:
    """Set up and measure one rank (the process group, if any, already initialised): its JSON row, with
    `extra` fields after the identifying ones, or the error that stopped it; `prepare` may adjust the
    setup before it is measured."""
    row = {"model": model, "strategy": strategy, "world": world, "rank": rank, **extra, "torch": torch.__version__,
           "batch_per_rank": BATCH, "global_batch": BATCH * (1 if strategy in ("single", "tp") else world)}
    try:
        run = SETUPS[strategy](model, rank, world)
        if prepare:
            prepare(run)
        row.update(run.info)
        row.update(_param_counts(run))
        row.update(measure_step(run))
    except Exception as e:  # recorded, so one failing rank still leaves a row
        import traceback

        row["error"] = f"{type(e).__name__}: {e}"
        row["traceback"] = traceback.format_exc()[-4000:]
    return row


def _fake_ddp_hook(run: Run) -> None:
    """DDP's reducer expects the future of its bucket's all-reduce to hold the reduced tensor; the fake
    group's futures hold None, which the reducer refuses ("expected the hook result is either a Tensor
    or a TensorList found None", c10d/comm.cpp) on the first backward. So a DDP model on the fake
    backend gets a comm hook doing what the built-in one does (divide the bucket by the world size in
    place, all-reduce it in place) and returning a future that holds the bucket: nothing allocated
    that the built-in path does not."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if not isinstance(run.module, DistributedDataParallel):
        return

    def allreduce_in_place(group, bucket):
        buf = bucket.buffer()
        buf.div_(dist.get_world_size(group))
        dist.all_reduce(buf, group=group)
        fut: torch.futures.Future = torch.futures.Future()
        fut.set_result(buf)
        return fut

    run.module.register_comm_hook(None, allreduce_in_place)
    run.info["ddp_comm_hook"] = ("fake backend: in-place divide and all_reduce, future set to the bucket "
                                 "(now a Python tensor, so before_step counts it in gc_other and ddp_buckets)")


def fake_rank_main(model: str, strategy: str, world: int, out: Path) -> None:
    """Rank 0 of a `world`-rank job, alone in this process, on PyTorch's fake process group: every
    collective returns at once without communicating (its outputs hold whatever was there), which
    leaves what each engine allocates, hence the memory measured, as on a real backend."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore  # registers the "fake" backend

    torch.set_num_threads(1)
    dist.init_process_group(backend="fake", rank=0, world_size=world, store=FakeStore())
    row = _measured_row(model, strategy, world, 0, prepare=_fake_ddp_hook, backend="fake")
    out.write_text(json.dumps(row, indent=1))
    dist.destroy_process_group()


def combinations(models=MODELS, strategies=STRATEGIES, worlds=WORLDS) -> list[tuple[str, str, int]]:
    combos = []
    for m in models:
        combos.append((m, "single", 1))
        combos += [(m, s, w) for s in strategies for w in worlds
                   if s != "single" and (not s.startswith("tp") or m != "cnn")]
    return combos


def launch(model: str, strategy: str, world: int, timeout: int = 1800) -> list[dict]:
    """One fresh torchrun launch for a combination; returns its ranks' rows (or one error row)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row"
        torchrun = Path(sys.executable).with_name("torchrun")
        cmd = [str(torchrun), "--standalone", "--nproc_per_node", str(world), __file__, "rank",
               "--model", model, "--strategy", strategy, "--out", str(out)]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-3000:]
        except subprocess.TimeoutExpired as e:
            rc, tail = "timeout", str(e)[-3000:]
        rows = [json.loads((Path(tmp) / f"row.rank{r}").read_text()) for r in range(world)
                if (Path(tmp) / f"row.rank{r}").exists()]
    if rc != 0 or len(rows) != world:
        rows.append({"model": model, "strategy": strategy, "world": world, "rank": None,
                     "error": f"torchrun exit {rc}", "log_tail": tail})
    return rows


def measure_all(out: Path, models=MODELS, strategies=STRATEGIES, worlds=WORLDS) -> list[dict]:
    """Every combination in its own launch; the file is rewritten after each, so a partial run keeps
    what it measured."""
    rows: list[dict] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    for model, strategy, world in combinations(models, strategies, worlds):
        t0 = time.perf_counter()
        got = launch(model, strategy, world)
        rows += got
        peaks = [r.get("peak_bytes", 0) / 2**20 for r in got if r.get("rank") is not None]
        errs = [r["error"] for r in got if "error" in r]
        print(f"{model:12} {strategy:16} w={world} {time.perf_counter() - t0:6.1f}s peak MiB "
              f"{[round(p, 1) for p in peaks]} {errs[:1] if errs else ''}", flush=True)
        out.write_text(json.dumps(rows, indent=1))
    return rows


def fake_combinations(models=MODELS, strategies=FAKE_STRATEGIES, worlds=FAKE_WORLDS) -> list[tuple[str, str, int]]:
    return [(m, s, w) for m in models for s in strategies for w in worlds if s != "tp" or m != "cnn"]


def launch_fake(model: str, strategy: str, world: int, timeout: int = 1800) -> dict:
    """One fresh process (this script's `fake_rank`) for a combination; returns rank 0's row, or an
    error row."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row"
        cmd = [sys.executable, __file__, "fake_rank", "--model", model, "--strategy", strategy,
               "--world", str(world), "--out", str(out)]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-3000:]
        except subprocess.TimeoutExpired as e:
            rc, tail = "timeout", str(e)[-3000:]
        if rc == 0 and out.exists():
            return json.loads(out.read_text())
    return {"model": model, "strategy": strategy, "world": world, "rank": 0, "backend": "fake",
            "error": f"exit {rc}", "log_tail": tail}


def measure_fake(out: Path, models=MODELS, strategies=FAKE_STRATEGIES, worlds=FAKE_WORLDS) -> list[dict]:
    """Rank 0 of every combination on the fake backend, each in its own process; the file is
    rewritten after each."""
    rows: list[dict] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    for model, strategy, world in fake_combinations(models, strategies, worlds):
        t0 = time.perf_counter()
        row = launch_fake(model, strategy, world)
        rows.append(row)
        err = row.get("error", "")
        print(f"{model:12} {strategy:16} w={world:<3} fake {time.perf_counter() - t0:6.1f}s rank-0 peak MiB "
              f"{row.get('peak_bytes', 0) / 2**20:8.2f} {err[:200]}", flush=True)
        out.write_text(json.dumps(rows, indent=1))
    return rows


# ------------------------------------------------------------------------------------- for the estimate side


def export_onnx(folder: Path = SCRATCH, batch: int = BATCH) -> None:
    """Each model, whole and in training mode, to ONNX with a dynamic batch axis (default node names)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in MODELS:
        model, x = build_model(name), make_batch(name, batch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(folder / f"{name}.onnx"), input_names=["x"],
                              dynamic_axes={"x": {0: "batch"}}, opset_version=20, dynamo=False,
                              training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=True)


def saved_bytes(name: str, batch: int = BATCH) -> dict:
    """Bytes autograd saves in one forward (saved_tensors_hooks), each storage once, parameters and
    buffers left out, the input counted; per block, and for what runs outside the blocks."""
    model, x = build_model(name), make_batch(name, batch)
    skip = {st._cdata for t in [*model.parameters(), *model.buffers()] for st in _storages(t)}
    seen: set[int] = set()
    where = ["outside blocks"]
    per: dict[str, int] = {}
    names = {id(m): n for n, m in model.named_modules()}

    def enter(module, args) -> None:
        where.append(names[id(module)])

    def leave(module, args, out) -> None:
        where.pop()

    for b in blocks(model):
        b.register_forward_pre_hook(enter)
        b.register_forward_hook(leave)

    def pack(t):
        for st in _storages(t):
            if st._cdata not in skip and st._cdata not in seen:
                seen.add(st._cdata)
                per[where[-1]] = per.get(where[-1], 0) + st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return {"batch": batch, "total": sum(per.values()), "per_block": per}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rank", help="one rank, under torchrun")
    r.add_argument("--model", choices=MODELS, required=True)
    r.add_argument("--strategy", choices=list(SETUPS), required=True)
    r.add_argument("--out", type=Path, required=True)
    m = sub.add_parser("measure", help="every combination, each in its own torchrun launch")
    m.add_argument("--out", type=Path, default=RESULTS / "parallel_gloo.json")
    m.add_argument("--models", default=",".join(MODELS))
    m.add_argument("--strategies", default=",".join(STRATEGIES))
    m.add_argument("--worlds", default=",".join(map(str, WORLDS)))
    f = sub.add_parser("fake", help="rank 0 of larger worlds, each combination in its own process, fake backend")
    f.add_argument("--out", type=Path, default=RESULTS / "parallel_fake.json")
    f.add_argument("--models", default=",".join(MODELS))
    f.add_argument("--strategies", default=",".join(FAKE_STRATEGIES))
    f.add_argument("--worlds", default=",".join(map(str, FAKE_WORLDS)))
    fr = sub.add_parser("fake_rank", help="rank 0 of --world ranks, alone, on the fake backend")
    fr.add_argument("--model", choices=MODELS, required=True)
    fr.add_argument("--strategy", choices=list(SETUPS), required=True)
    fr.add_argument("--world", type=int, required=True)
    fr.add_argument("--out", type=Path, required=True)
    sub.add_parser("onnx", help=f"export both models to {SCRATCH}")
    sub.add_parser("saved", help=f"autograd's saved bytes per block to {SCRATCH / 'saved.json'}")
    a = p.parse_args(argv)
    if a.cmd == "rank":
        rank_main(a.model, a.strategy, a.out)
    elif a.cmd == "measure":
        measure_all(a.out, a.models.split(","), a.strategies.split(","), [int(w) for w in a.worlds.split(",")])
    elif a.cmd == "fake":
        measure_fake(a.out, a.models.split(","), a.strategies.split(","), [int(w) for w in a.worlds.split(",")])
    elif a.cmd == "fake_rank":
        fake_rank_main(a.model, a.strategy, a.world, a.out)
    elif a.cmd == "onnx":
        export_onnx()
    else:
        SCRATCH.mkdir(parents=True, exist_ok=True)
        result = {name: saved_bytes(name) for name in MODELS}
        (SCRATCH / "saved.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
