"""The counting conventions, stated once; every output prints them beside the totals."""

from __future__ import annotations

CONVENTIONS: dict[str, str] = {
    "macs": "MACs are the multiply-accumulates of Conv, ConvTranspose, Gemm, MatMul and Einsum "
            "(a bias add is not a MAC). One fused multiply-add counts as one MAC.",
    "flops": "FLOPs = 2 x MACs + every other floating-point op: one per output element for bias adds, "
             "element-wise ops and activations (3 for Softmax), one per element read for pools and "
             "reductions, 2 (BatchNorm) or 5 (other norms) per element for normalizations.",
    "activations": "Activations count the graph inputs plus every tensor a layer writes, in elements; "
                   "views (Reshape, Flatten, ...) are listed but share their input's memory. "
                   "Folded shape arithmetic (constants computed at load time) is not counted.",
    "params": "params counts each layer's weights and biases: an initializer read by k layers counts k "
              "times. params_stored counts each distinct initializer once: what memory holds. "
              "Buffers (BatchNorm running statistics) are apart. Integer and scalar constants are "
              "not parameters.",
    "peak": "peak = parameter bytes + graph inputs + the largest set of activation buffers alive at "
            "once in the order the layers are written (--mode inference: in the runtime's order); a "
            "buffer lives from its layer to its last reader, views share it, and a unary element-wise "
            "op writes into an input buffer of its size that dies there.",
    "units": "Counts use powers of 1000 (K, M, G); bytes use powers of 1024 (KiB, MiB, GiB).",
}
