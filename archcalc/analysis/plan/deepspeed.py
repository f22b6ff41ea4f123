"""DeepSpeed's own memory estimators, as their functions compute them: a labelled compatibility mode.

``deepspeed.runtime.zero.stage_1_and_2.estimate_zero2_model_states_mem_needs`` and
``deepspeed.runtime.zero.stage3.estimate_zero3_model_states_mem_needs`` price model states from two
counts, the parameters and the largest module's own parameters, with their conventions: 16 bytes a
parameter for ZeRO-2 (fp16 weights, gradients and fp32 Adam state), 18 for ZeRO-3, the largest layer
gathered whole in fp32 (4 bytes a parameter), and a 1.5x "additional buffer factor" on the host.
They ignore activations and DDP's buckets. archcalc's own model (``parallel``) prices the terms one
by one; this module lets a user set the two side by side, and the tests reproduce DeepSpeed's
printed tables with it. Returns (host bytes, GPU bytes) per rank, as DeepSpeed's functions do.
"""

from __future__ import annotations


def zero2(
    total_params: int, gpus_per_node: int = 1, nodes: int = 1, cpu_offload: bool = True, buffer_factor: float = 1.5
) -> tuple[int, int]:
    gpus = nodes * gpus_per_node
    if cpu_offload:
        gpu = 2 * total_params
        host = total_params * max(4 * gpus, 16) * buffer_factor
    else:
        gpu = 4 * total_params + int(16 * total_params / gpus)
        host = total_params * 4 * gpus_per_node * buffer_factor
    return int(host), int(gpu)


def zero3(
    total_params: int,
    largest_layer_params: int,
    gpus_per_node: int = 1,
    nodes: int = 1,
    cpu_offload: bool = True,
    cpu_offload_params: bool = True,
    zero_init: bool = True,
    buffer_factor: float = 1.5,
) -> tuple[int, int]:
    gpus = nodes * gpus_per_node
    per_node = 1 / nodes
    largest = 4 * largest_layer_params
    if cpu_offload and cpu_offload_params:
        gpu = largest
        host = (
            total_params * (18 * per_node if zero_init else max(4 * gpus_per_node, 18 * per_node)) * buffer_factor
        )
    elif cpu_offload:
        gpu = largest + int(2 * total_params / gpus)
        host = (
            total_params * (16 * per_node if zero_init else max(4 * gpus_per_node, 16 * per_node)) * buffer_factor
        )
    else:
        gpu = largest + int(18 * total_params / gpus)
        host = (largest_layer_params if zero_init else total_params) * 4 * gpus_per_node * buffer_factor
    return int(host), int(gpu)


def zero3_table(
    total_params: int, largest_layer_params: int, gpus_per_node: int = 1, nodes: int = 1
) -> list[dict]:
    """The six rows ``estimate_zero3_model_states_mem_needs_all_cold`` prints, as data."""
    rows = []
    for offload_param, offload_optimizer in ((True, True), (False, True), (False, False)):
        for zero_init in (True, False):
            host, gpu = zero3(
                total_params,
                largest_layer_params,
                gpus_per_node,
                nodes,
                offload_optimizer,
                offload_param,
                zero_init,
            )
            rows.append(
                {
                    "offload_param": "cpu" if offload_param else "none",
                    "offload_optimizer": "cpu" if offload_optimizer else "none",
                    "zero_init": int(zero_init),
                    "host": host,
                    "gpu": gpu,
                }
            )
    return rows
