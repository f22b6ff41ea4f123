"""Read an ONNX file's structure without touching its weight bytes.

The protobuf wire format is walked with small positioned reads down to the initializers; each
initializer is copied without its data fields (unless it is small enough that shape arithmetic may
need its value), and only what remains -- the graph, names, dims, dtypes -- is parsed with the
protobuf library. Weights are skipped by offset, never read, so time and resident memory follow
the size of the graph, not of the weights, and files over 2 GB work. (Not mmap: the kernel maps
whole page-cache folios around each touched header, which put megabytes of weights per tensor
into the resident set.)
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from archcalc.onnx_proto import ModelProto, TensorProto

# Field numbers from onnx.proto.
MODEL_GRAPH = 7
GRAPH_INITIALIZER = 5
TENSOR_DIMS = 1
TENSOR_NAME = 8
TENSOR_RAW_DATA = 9
MAX_SMALL_DATA = 1 << 16  # bytes of data a tensor kept whole may hold: 64 elements of any type, and strings
# float_data, int32_data, string_data, int64_data, raw_data, double_data, uint64_data
TENSOR_DATA_FIELDS = frozenset({4, 5, 6, 7, 9, 10, 11})
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
SMALL_FILE = 16 << 20


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


class _File:
    """Indexable bytes of an open file, read on demand through one cached window."""

    WINDOW = 1 << 12

    def __init__(self, fd: int, size: int):
        self.fd, self.size = fd, size
        self.start, self.data = 0, b""

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key):
        if isinstance(key, slice):
            return os.pread(self.fd, key.stop - key.start, key.start)
        if not self.start <= key < self.start + len(self.data):
            self.start, self.data = key, os.pread(self.fd, self.WINDOW, key)
        return self.data[key - self.start]


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise WireError("truncated or malformed varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _fields(buf, start: int, end: int):
    """Yield (field number, wire type, field start, payload start, payload end) of a message."""
    pos = start
    while pos < end:
        key_at = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            _, stop = _varint(buf, pos, end)
        elif wire == FIXED64:
            stop = pos + 8
        elif wire == FIXED32:
            stop = pos + 4
        elif wire == LENGTH:
            length, pos = _varint(buf, pos, end)
            stop = pos + length
        else:
            raise WireError(f"unsupported wire type {wire}")
        if stop > end or number == 0:
            raise WireError("truncated message")
        yield number, wire, key_at, pos, stop
        pos = stop


def _dims(buf, fields) -> list[int]:
    dims = []
    for number, wire, _, start, stop in fields:
        if number != TENSOR_DIMS:
            continue
        if wire != LENGTH:  # one dim per field
            dims.append(_varint(buf, start, stop)[0])
            continue
        pos = start
        while pos < stop:  # packed dims
            value, pos = _varint(buf, pos, stop)
            dims.append(value)
    return dims


def _light_tensor(buf, start: int, end: int, keep_values_upto: int, skipped: dict, raw: dict) -> bytes:
    """The TensorProto at buf[start:end] without its data, unless it has few elements and little
    data (a "scalar" declaring gigabytes of data is not read); a tensor whose data is left out is
    noted in ``skipped`` (name -> its place in the file) and its raw data's length in ``raw``."""
    fields = list(_fields(buf, start, end))
    count = math.prod(_dims(buf, fields))
    data = sum(stop - s for number, _, _, s, stop in fields if number in TENSOR_DATA_FIELDS)
    if count <= keep_values_upto and data <= MAX_SMALL_DATA:
        return bytes(buf[start:end])
    name = next((bytes(buf[s:stop]) for number, _, _, s, stop in fields if number == TENSOR_NAME), b"")
    key = name.decode("utf-8", "replace")
    skipped[key] = (start, end)
    raw[key] = sum(stop - s for number, _, _, s, stop in fields if number == TENSOR_RAW_DATA)
    return b"".join(bytes(buf[k:stop]) for number, _, k, _, stop in fields if number not in TENSOR_DATA_FIELDS)


def _submessage(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | LENGTH) + _encode_varint(len(payload)) + payload


def _light_graph(buf, start: int, end: int, keep_values_upto: int, skipped: dict, raw: dict) -> bytes:
    out = []
    for number, wire, k, s, stop in _fields(buf, start, end):
        if number == GRAPH_INITIALIZER and wire == LENGTH:
            out.append(_submessage(number, _light_tensor(buf, s, stop, keep_values_upto, skipped, raw)))
        else:
            out.append(bytes(buf[k:stop]))
    return b"".join(out)


def read_structure(path: Path, keep_values_upto: int, skipped: dict[str, tuple[int, int]] | None = None,
                   raw: dict[str, int] | None = None) -> ModelProto:
    """The model at ``path`` with the data of every initializer over ``keep_values_upto`` elements
    left out; ``skipped`` receives where each left-out initializer lies in the file (for
    ``read_tensor``), ``raw`` the length of its raw data. Raises WireError (or protobuf's
    DecodeError) on a malformed file."""
    skipped = {} if skipped is None else skipped
    raw = {} if raw is None else raw
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if not size:
            raise WireError("the file is empty")
        # A small file is read whole (fast indexing); a large one through positioned reads.
        buf = f.read() if size <= SMALL_FILE else _File(f.fileno(), size)
        out = []
        for number, wire, k, s, stop in _fields(buf, 0, len(buf)):
            if number == MODEL_GRAPH and wire == LENGTH:
                out.append(_submessage(number, _light_graph(buf, s, stop, keep_values_upto, skipped, raw)))
            else:
                out.append(bytes(buf[k:stop]))
    model = ModelProto()
    model.ParseFromString(b"".join(out))
    return model


def read_tensor(path: Path, place: tuple[int, int]) -> TensorProto:
    """The whole initializer at ``place`` (as ``read_structure`` noted it), data included."""
    start, end = place
    with open(path, "rb") as f:
        tensor = TensorProto()
        tensor.ParseFromString(os.pread(f.fileno(), end - start, start))
    return tensor
