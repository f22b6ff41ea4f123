"""What a path given as a model is: a regular file, a directory, a pipe, a device, a link loop --
told apart once, so that every front end refuses the same things with the same words."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from archcalc.errors import InputError


def file_status(path: str | os.PathLike) -> str:
    """"file", "missing", or (as an InputError) why ``path`` cannot be read as a model file."""
    try:
        st = os.stat(path)
    except ValueError:  # a NUL, or a character the file system's encoding lacks: no file has that name
        return "missing"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{path}: a loop of symbolic links: point it at the model file") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
            return "missing"
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: is a directory, not a model file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path}: not a regular file (a pipe, socket or device): give an .onnx or .arch file")
    return "file"


def regular_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path when it is a regular file; else an InputError that says what it is."""
    if file_status(path) == "missing":
        raise InputError(f"{path}: no such file: check the path, or name a zoo model (archcalc zoo)")
    return Path(path)


# Files users give in place of an ONNX model, told by their first bytes: (offset, magic, what it is).
# GGUF: llama.cpp's docs/gguf.md; HDF5: its format spec's signature; TFLite: the flatbuffer file
# identifier "TFL3" after the root offset; zip: PyTorch's torch.save (and .npz, .keras).
MAGICS = ((0, b"GGUF", "a GGUF file"), (0, b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras)"),
          (4, b"TFL3", "a TensorFlow Lite model"), (0, b"PK\x03\x04", "a zip archive (a PyTorch checkpoint?)"))
NOT_ONNX = "archcalc reads ONNX, designs and config.json; export the model to ONNX or give its config.json"


def _safetensors(head: bytes, size: int) -> bool:
    """safetensors' layout: a little-endian u64 header length, then that many bytes of JSON."""
    return len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8


def not_onnx(path: Path) -> str | None:
    """Why the file at ``path``, which did not read as ONNX, is something else, with what to run
    instead (one line, naming the file); None when nothing tells what it is."""
    try:
        with open(path, "rb") as f:
            head, size = f.read(4096), os.fstat(f.fileno()).st_size  # a design's comments come first
    except OSError:
        return None
    what = next((w for at, magic, w in MAGICS if head[at:at + len(magic)] == magic), None)
    if what is None and _safetensors(head, size):
        what = "a safetensors checkpoint"
    if what is not None:
        return f"{path}: {what}, not an ONNX model: {NOT_ONNX}"
    if path.suffix == ".arch":
        return (f"{path}: a design, not an ONNX model: this command runs ONNX; export the design first "
                f"(archcalc export {path} -o {path.stem}.onnx)")
    if b"INPUT[" in head or b"TOKENS[" in head:
        return f"{path}: a design, not an ONNX model: designs are read from .arch files: name it {path.stem}.arch"
    if head.lstrip()[:1] == b"{":
        return f"{path}: a JSON file, not an ONNX model: this command runs ONNX; export the model to ONNX"
    return None
