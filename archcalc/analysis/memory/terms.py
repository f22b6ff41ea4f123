"""The memory terms, named once: every output that splits memory into terms -- fit's verdicts,
plan's rows, serving, the reports and the JSON -- uses these names for these things.

A name means one thing everywhere: ``weights`` is every stored tensor as inference holds it; a
training step splits it into the ``parameters`` it trains and the ``buffers`` it does not.
"""

from __future__ import annotations

WEIGHTS = "weights"  # every stored tensor, as inference and serving hold it (parameters + buffers)
PARAMETERS = "parameters"  # the trained parameters, at the width they compute in
BUFFERS = "buffers"  # stored tensors not trained (BatchNorm's running statistics)
MASTER_WEIGHTS = "master weights"  # fp32 copies of the parameters under mixed precision
GRADIENTS = "gradients"  # the parameters' gradients
OPTIMIZER_STATE = "optimizer state"  # the optimizer's slots (Adam's two moments)
OPTIMIZER_TEMPORARIES = "optimizer temporaries"  # what the optimizer allocates while it steps
SAVED_ACTIVATIONS = "saved activations"  # what autograd keeps for backward
ACTIVATION_GRADIENTS = "activation gradients"  # gradients of activations alive in backward
ACTIVATIONS = "activations"  # the forward's live activations (a pipeline stage's, before they are saved)
INPUTS = "inputs"  # the graph inputs the caller holds
ACTIVATION_PEAK = "activation peak"  # inference: the largest set of live activation buffers
RUNTIME = "runtime"  # the runtime's own constant (CUDA context, library workspaces)
WORKSPACE = "workspace"  # inference: the largest per-op scratch (a conv's im2col), when asked
LOAD_TRANSIENT = "load transient"  # inference: what loading holds beyond the steady total
NON_TORCH = "non-torch"  # serving: memory outside PyTorch's allocator (CUDA context, NCCL)
COMMUNICATION_BUFFERS = "communication buffers"  # gradient buckets, reduce-scatter inputs
GATHERED_PARAMETERS = "gathered parameters"  # FSDP's units gathered whole around their compute
PIPELINE_BUFFERS = "pipeline buffers"  # a stage's receive buffers
IN_FLIGHT = "in-flight micro-batches"  # saved activations of the micro-batches a stage holds
LOSS = "loss"  # the cross-entropy's float32 copies of the logits at the head (see memory.loss)
KEPT_OUTPUTS = "kept outputs"  # the last stage's outputs kept until the step merges them
