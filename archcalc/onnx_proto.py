"""The ONNX messages, and onnx's static shape inference, without the onnx package's import cost.

``import onnx`` costs half a second or more, nearly all of it ``ml_dtypes``' extension, which its
``__init__`` pulls in through ``onnx.helper``; reading a file's structure needs none of that. So the
generated protobuf module (``onnx_ml_pb2.py``) is loaded from onnx's installed folder on its own,
and so is the C++ extension for shape inference. Both are what ``import onnx`` would load: the
message classes are the same class objects as ``onnx.ModelProto`` and the rest once onnx is
imported (protobuf keeps one class per descriptor), and the extension is registered under the name
onnx imports it by, so onnx later finds it instead of initialising it twice (which it refuses).
Where onnx's layout differs from this, everything falls back to ``import onnx``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

EXTENSION = "onnx.onnx_cpp2py_export"


def _onnx_folder() -> str | None:
    spec = importlib.util.find_spec("onnx")
    locations = spec.submodule_search_locations if spec else None
    return locations[0] if locations else None


def _from_file(name: str, path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _messages() -> Any:
    """onnx's generated messages: its pb2 module read from its file, else onnx itself."""
    if "onnx" in sys.modules:  # already paid for
        return sys.modules["onnx"]
    folder = _onnx_folder()
    try:
        if folder is None:
            raise ImportError("onnx is not installed")
        return _from_file("_archcalc_onnx_ml_pb2", f"{folder}/onnx_ml_pb2.py")
    except Exception:  # another layout of the package: pay for the import
        import onnx

        return onnx


_pb = _messages()
ModelProto = _pb.ModelProto
GraphProto = _pb.GraphProto
NodeProto = _pb.NodeProto
TensorProto = _pb.TensorProto
AttributeProto = _pb.AttributeProto
ValueInfoProto = _pb.ValueInfoProto
TypeProto = _pb.TypeProto
OperatorSetIdProto = _pb.OperatorSetIdProto
IR_VERSION: int = _pb.IR_VERSION

_lock = threading.Lock()


def _extension() -> Any:
    """onnx's C++ extension, loaded as ``import onnx`` loads it (same module name) but without
    running onnx's ``__init__``; onnx imported later finds it in ``sys.modules``."""
    with _lock:
        if EXTENSION in sys.modules:
            return sys.modules[EXTENSION]
        folder = _onnx_folder()
        suffixes = importlib.machinery.EXTENSION_SUFFIXES
        loader = importlib.machinery.FileFinder(folder or "", (importlib.machinery.ExtensionFileLoader, suffixes))
        spec = loader.find_spec(EXTENSION.rsplit(".", 1)[1]) if folder else None
        if spec is None or "onnx" in sys.modules:
            raise ImportError("onnx's extension is not where it is expected, or onnx is being imported")
        spec.name = EXTENSION
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        sys.modules[EXTENSION] = module
        return module


def infer_shapes(model: Any) -> Any:
    """``onnx.shape_inference.infer_shapes(model)``: the same C++ inference on the same bytes, with
    onnx's defaults (no type check, not strict, no data propagation)."""
    try:
        inferred = _extension().shape_inference.infer_shapes(model.SerializeToString(), False, False, False)
    except ImportError:
        import onnx.shape_inference

        return onnx.shape_inference.infer_shapes(model)
    out = ModelProto()
    out.ParseFromString(inferred)
    return out
