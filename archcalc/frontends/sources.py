"""Where a model comes from: a file path, an in-memory ModelProto, or a zoo name."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from archcalc.dtypes import MIXED_AT
from archcalc.errors import DSLError, InputError
from archcalc.frontends.paths import file_status

if TYPE_CHECKING:  # the IR brings numpy: listing the zoo needs neither
    from archcalc.ir import Graph

ZOO_SUFFIXES = (".onnx", ".arch")


def zoo_models() -> dict[str, Path]:
    """Zoo name -> file, for every model shipped in ``zoo/`` (names are paths without suffix)."""
    root = Path(str(resources.files("archcalc.zoo")))
    return {str(p.relative_to(root).with_suffix("")): p
            for p in sorted(root.rglob("*")) if p.suffix in ZOO_SUFFIXES}


def zoo_summary(path: Path) -> str:
    """A zoo entry's one-line description: a design's first header line, or what an export is."""
    if path.suffix == ".arch":
        first = next((ln for ln in path.read_text().splitlines() if ln.startswith("#")), "# a design")
        return first.lstrip("# ").strip()
    return f"{path.parent.name} export, weights stripped ({path.name})"


def resolve(source: str | os.PathLike) -> Path:
    """A regular file, or the zoo file that ``source`` names."""
    if file_status(source) == "file":
        return Path(source)
    zoo = zoo_models()
    if str(source) in zoo:
        return zoo[str(source)]
    if is_design_text(source):  # where a file is needed (validate runs one): designs are exported first
        raise InputError(f"{source}: design text, not a model file: this command runs ONNX; export the design "
                         f"first (archcalc export \"{source}\" -o design.onnx)")
    raise InputError(f"{source}: no such file or zoo model: check the path, or list the zoo with "
                     "'archcalc zoo'")


def _design_text(path: Path) -> str:
    """A design file as text: UTF-8 (a byte-order mark allowed); an undecodable byte is an error at
    its line:column."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:  # shown like any design error: the line, a caret under the byte
        line = data.count(b"\n", 0, exc.start) + 1
        start = data.rfind(b"\n", 0, exc.start) + 1
        column = len(data[start:exc.start].decode("utf-8", errors="backslashreplace")) + 1
        raise DSLError(str(path), data.decode("utf-8", errors="backslashreplace"), line, column,
                       f"byte 0x{data[exc.start]:02x} is not UTF-8: save the design as UTF-8") from None


def file_status_quiet(source: str) -> str:
    """``file_status``, with anything unreadable counted as not a file (design text is no path)."""
    try:
        return file_status(source)
    except InputError:
        return "other"


def is_design_text(source) -> bool:
    """A design written inline on the command line: ``"INPUT[32x32x3] -> CONV3-12 -> ..."``."""
    return isinstance(source, str) and ("INPUT[" in source or "TOKENS[" in source) and \
        file_status_quiet(source) == "missing"


# A config's attention kernels (``--attention``), as the graph builds them: eager keeps the scores;
# sdpa and flash are ONNX's fused Attention, priced as PyTorch's flash kernel. A config is read as
# transformers runs it, and transformers' default is sdpa (PreTrainedModel._check_and_adjust_attn_implementation
# picks it wherever torch has it), as is every engine that trains from one (torchtitan, Megatron-LM's
# fused kernels).
KERNELS = {"eager": "eager", "sdpa": "fused", "flash": "fused"}
DEFAULT_KERNEL = "sdpa"


def load_graph(source, attention: str | None = None) -> Graph:
    """The IR of ``source``: a path (.onnx or .arch), a zoo name, design text, or an ``onnx.ModelProto``;
    ``attention`` (a ``KERNELS`` key) chooses a config's attention kernel, which no other source has
    to choose. Each front end is imported when its kind of source comes: a CNN design needs no ONNX
    messages."""
    if attention is not None and attention not in KERNELS:
        raise InputError(f"--attention {attention}: choose one of {', '.join(KERNELS)}")
    if is_design_text(source):
        from archcalc.frontends.dsl.build import build

        _no_kernel(attention, "<inline>")
        return build(str(source), "<inline>")
    path = resolve(source) if isinstance(source, (str, os.PathLike)) else None
    if path is not None and path.suffix == ".arch":
        from archcalc.frontends.dsl.build import build

        _no_kernel(attention, path)
        return build(_design_text(path), str(path))
    from archcalc.frontends.onnx_import import import_onnx

    if path is not None and path.suffix == ".json":
        from archcalc.frontends.hf_config import read_config

        return config_graph(read_config(path), str(path), attention)
    _no_kernel(attention, path or "the model")
    return import_onnx(source if path is None else path)


def config_graph(config: dict, label: str, attention: str | None = None) -> Graph:
    """The graph of a read config (``hf_config.read_config``), run with ``attention``'s kernel."""
    import functools

    from archcalc.frontends import hf_quant
    from archcalc.frontends.hf_layers import config_model
    from archcalc.frontends.onnx_import import import_onnx
    from archcalc.frontends.transformer_net import with_random_weights

    model = config_model(config, kernel=KERNELS[attention or DEFAULT_KERNEL])
    graph = import_onnx(model, label=label)
    graph.default_dtype = MIXED_AT.get(config.get("torch_dtype") or config.get("dtype") or "")
    graph.quantized = hf_quant.method(config)
    if not graph.quantized:  # a quantized one's int4 / fp8 values are not drawn: nothing to run
        graph.runnable = functools.partial(with_random_weights, model)  # `archcalc export`, as for designs
    return graph


def _no_kernel(attention: str | None, where) -> None:
    """--attention chooses what a config leaves open; a design and an ONNX file have chosen."""
    if attention is not None:
        raise InputError(f"--attention {attention}: {where} is not a config.json; a design says its kernel per "
                         "ATTN (/fused), an ONNX file runs the attention it exports")


def serving_graph(source) -> Graph:
    """``source`` as a server runs it: a config's attention fused (flash attention keeps no scores),
    as vLLM and every serving engine run it; the sizes serving needs are read from the graph."""
    path = config_path(source)
    if path is not None:
        from archcalc.frontends.hf_config import read_config

        return config_graph(read_config(path), str(path), "flash")
    return load_graph(source)


def config_path(source) -> Path | None:
    """``source``'s path when it names a transformers config.json, else None."""
    from archcalc.frontends.hf_config import is_config

    if not isinstance(source, (str, os.PathLike)) or is_design_text(source):
        return None
    path = resolve(source)
    return path if is_config(path) else None
