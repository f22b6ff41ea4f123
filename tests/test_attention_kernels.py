"""A config priced with --attention: the kernel transformers runs, kept as it keeps it.

transformers' LlamaForCausalLM with attn_implementation="sdpa" (no padding: causal, grouped-query
heads passed whole) runs PyTorch's flash kernel on this CPU; what that call saves for backward, per
layer, is what archcalc's fused Attention layer keeps for the same config (Q, K, V, the output, the
log-sum-exp). With eager attention the scores' probabilities are kept instead (S x S a head)."""

from __future__ import annotations

import pytest
from conftest import ROOT

from archcalc.api import estimate

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CONFIG = ROOT / "tests" / "fixtures" / "hf_configs" / "llama.json"
SEQUENCE = 256


def _sdpa_saved_per_call() -> list[int]:
    """Bytes of the distinct storages each scaled_dot_product_attention call saves in a forward."""
    import transformers.integrations.sdpa_attention as sdpa

    model = transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.from_pretrained(CONFIG), attn_implementation="sdpa").float().train()
    calls: list[int] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def recorded(*args, **kwargs):
        storages: dict[int, int] = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = real(*args, **kwargs)
        assert "Flash" in out.grad_fn.name()
        calls.append(sum(storages.values()))
        return out

    sdpa.torch.nn.functional.scaled_dot_product_attention = recorded
    try:
        model(input_ids=torch.randint(0, 1000, (1, SEQUENCE)))
    finally:
        sdpa.torch.nn.functional.scaled_dot_product_attention = real
    return calls


def test_sdpa_keeps_what_transformers_sdpa_keeps():
    est = estimate(CONFIG, dims={"sequence": SEQUENCE}, attention="sdpa")
    saved = est.saved_by_layer()
    ours = [v for k, v in saved.items() if k.endswith("/Attention")]
    assert ours == _sdpa_saved_per_call()
    eager = estimate(CONFIG, dims={"sequence": SEQUENCE}, attention="eager")
    assert not any(k.endswith("/Attention") for k in eager.saved_by_layer())
    assert sum(eager.saved_by_layer().values()) > sum(saved.values())

