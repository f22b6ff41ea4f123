"""The counting conventions, stated once; every output prints them beside the totals."""

from __future__ import annotations

CONVENTIONS: dict[str, str] = {
    "macs": "MACs are the multiply-accumulates of Conv, ConvTranspose, Gemm, MatMul and Einsum "
            "(a bias add is not a MAC). One fused multiply-add counts as one MAC.",
    "flops": "FLOPs = 2 x MACs + every other floating-point op: one per output element for bias adds, "
             "element-wise ops and activations (3 for Softmax), one per element read for pools and "
             "reductions, 2 (BatchNorm) or 5 (other norms) per element for normalizations; none for ops "
             "that move or index data and for logical and bitwise ops (archcalc.ops.registry.FREE_OPS).",
    "activations": "Activations count the graph inputs plus every tensor a layer writes, in elements; "
                   "views (Reshape, Flatten, ...) are listed but share their input's memory. "
                   "Folded shape arithmetic (constants computed at load time) is not counted.",
    "params": "params counts each stored weight once: what memory holds. params_per_layer counts each "
              "layer's weights and biases: a weight read by k layers counts k times (tied weights, or "
              "identical constants an exporter merged). Buffers (BatchNorm running statistics) are "
              "apart. Stored tensors are weights wherever they are held (initializers, Constant nodes, "
              "If/Loop bodies; floats and int8/int4 quantized values at their true bytes); scales and zero "
              "points are quant_params, apart. Wider integers, scalars (but a rule's one-element bias) and "
              "sampling positions (a Resize's scales) are not parameters.",
    "exactness": "Totals are exact unless totals.status says otherwise: 'upper bound' where sizes depend "
                 "on data (NonZero, NonMaxSuppression: taken at their largest, marked bound), 'lower "
                 "bound' where layers are unknown (listed with why) or have no cost rule, 'partial' when "
                 "both.",
    "peak": "activation peak = what onnxruntime holds: the larger of a first run's largest set of live "
            "activation buffers in its execution order and the memory-pattern block of later runs; a "
            "buffer lives from its layer to its last reader, views share it, an activation writes over "
            "a dying input of its size, and a new output takes a dead buffer of its static shape. "
            "inference peak = parameter bytes + graph inputs + activation peak.",
    "units": "Counts use powers of 1000 (K, M, G); bytes use powers of 1024 (KiB, MiB, GiB).",
}

# The optimizer whose state a training step is priced with when none is named, by every command and
# entry point alike: Adam (two fp32-sized slots per parameter) is what LLM and most modern training
# runs, and what published memory figures (ZeRO's 16 bytes per parameter, mixed Adam) assume.
DEFAULT_OPTIMIZER = "adam"
