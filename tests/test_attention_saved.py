"""What fused attention keeps for its backward, against PyTorch's own flash kernel on this CPU.

PyTorch's scaled_dot_product_attention with the flash backend (``_scaled_dot_product_flash_attention
_for_cpu``; on CUDA ``_scaled_dot_product_flash_attention``, as FlashAttention-2) saves Q, K, V, the
output and the softmax's log-sum-exp, float32, one a query row a head; never the scores. ONNX's
Attention op is priced as that kernel: its saved bytes must be the storages autograd's
saved_tensors_hooks see."""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper

from archcalc.api import estimate

torch = pytest.importorskip("torch")


def _pytorch_saved(shape: tuple[int, ...], dtype) -> int:
    """Bytes of the distinct storages SDPA's flash kernel saves for backward (inputs included)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(*shape, dtype=dtype, requires_grad=True) for _ in range(3))
    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert "Flash" in out.grad_fn.name()
    return sum(storages.values())


@pytest.mark.parametrize("onnx_type,dtype", [(TensorProto.FLOAT, "float32"), (TensorProto.BFLOAT16, "bfloat16")])
def test_fused_attention_saves_what_flash_attention_saves(tmp_path, onnx_type, dtype):
    shape = (2, 4, 64, 16)
    inputs = [helper.make_tensor_value_info(n, onnx_type, list(shape)) for n in "qkv"]
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], name="attn", is_causal=1)
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", onnx_type, list(shape))])
    path = tmp_path / "attention.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)],
                                       ir_version=10).SerializeToString())
    est = estimate(path)
    memory = est.training_memory()
    assert est.saved_by_layer()["attn"] + memory.saved_inputs == _pytorch_saved(shape, getattr(torch, dtype))
