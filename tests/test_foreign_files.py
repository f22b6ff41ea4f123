"""A file that is not ONNX, given where ONNX is read (issue 21, item 8): one line that says what it
is and what to run instead, exit code 2. The files are written from their formats' specifications:
safetensors (a little-endian u64 header length, then a JSON header: huggingface/safetensors'
README) and GGUF (magic "GGUF", a u32 version, u64 tensor and key-value counts: ggml's docs/gguf.md)."""

from __future__ import annotations

import json
import struct

import pytest
from click.testing import CliRunner
from conftest import ROOT

from archcalc.cli import main

READS = "archcalc reads ONNX, designs and config.json; export the model to ONNX or give its config.json"


def safetensors(path):
    header = json.dumps({"weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                         "__metadata__": {"format": "pt"}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    return path


def gguf(path):
    key = b"general.architecture"
    kv = struct.pack("<Q", len(key)) + key + struct.pack("<I", 8) + struct.pack("<Q", 5) + b"llama"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv)
    return path


# Each command that reads a model, with what else it needs to run.
COMMANDS = {"estimate": [], "validate": ["--quiet"], "fit": ["--gpu", "T4"]}


def one_line(command, source) -> str:
    result = CliRunner().invoke(main, [command, str(source), *COMMANDS[command]])
    text = result.output.strip()
    assert result.exit_code == 2 and "\n" not in text and text.startswith("error: "), text
    return text


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("make, what", [(safetensors, "a safetensors checkpoint"), (gguf, "a GGUF file")])
def test_checkpoints_of_other_formats(tmp_path, command, make, what):
    for name in ("model.safetensors" if make is safetensors else "model.gguf", "model.onnx"):
        path = make(tmp_path / name)
        assert one_line(command, path) == f"error: {path}: {what}, not an ONNX model: {READS}"


def test_a_design_given_to_validate(tmp_path):
    path = ROOT / "zoo" / "lenet5.arch"
    assert one_line("validate", path) == (f"error: {path}: a design, not an ONNX model: this command runs ONNX; "
                                          f"export the design first (archcalc export {path} -o lenet5.onnx)")
    assert "archcalc export" in one_line("validate", "lenet5")


def test_design_text_given_to_validate():
    text = "INPUT[32x32x3] -> CONV3-8 -> FC-10"
    assert one_line("validate", text) == (f"error: {text}: design text, not a model file: this command runs ONNX; "
                                          f"export the design first (archcalc export \"{text}\" -o design.onnx)")


def test_design_text_in_a_file_not_named_arch(tmp_path):
    path = tmp_path / "net.txt"
    path.write_text("# a small net\n" * 30 + "INPUT[32x32x3] -> CONV3-8 -> FC-10\n")
    assert one_line("estimate", path) == (f"error: {path}: a design, not an ONNX model: designs are read from "
                                          ".arch files: name it net.arch")


def test_a_config_given_to_validate():
    path = ROOT / "tests" / "fixtures" / "hf_configs" / "llama.json"
    assert one_line("validate", path) == (f"error: {path}: a JSON file, not an ONNX model: this command runs "
                                          "ONNX; export the model to ONNX")


def test_other_broken_files_keep_their_message(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x0f" * 40)
    assert "not a valid ONNX model" in one_line("estimate", path) and "re-export it" in one_line("estimate", path)
