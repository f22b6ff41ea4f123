"""Tiny quantized checkpoints written by compressed-tensors itself (llm-compressor's format, what vLLM
loads), kept as their config.json and safetensors header only (names, dtypes, shapes, byte offsets;
no weights): tests/fixtures/quantized/<scheme>/. The test prices each config and compares with the
bytes the header declares. Needs torch, transformers and compressed-tensors.
Usage: python tools/make_quantized_fixtures.py
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import torch
import transformers
from compressed_tensors.compressors import ModelCompressor
from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config, preset_name_to_scheme

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "quantized"
SCHEMES = ("W4A16", "W4A16_ASYM", "W8A8", "FP8", "FP8_DYNAMIC", "FP8_BLOCK")


def header(path: Path) -> dict:
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def main() -> None:
    config = transformers.LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                      num_attention_heads=8, num_key_value_heads=2, vocab_size=1000,
                                      torch_dtype="bfloat16")
    for name in SCHEMES:
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        groups = {"group_0": preset_name_to_scheme(name, ["Linear"])}
        apply_quantization_config(model, QuantizationConfig(config_groups=groups, ignore=["lm_head"]))
        compressor = ModelCompressor.from_pretrained_model(model, quantization_format=None)
        compressor.compress_model(model)
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            compressor.update_config(tmp)
            out = OUT / name
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(Path(tmp, "config.json").read_text())
            (out / "header.json").write_text(json.dumps(header(Path(tmp, "model.safetensors")), indent=0) + "\n")
        print(name)


if __name__ == "__main__":
    main()
