"""Where a model comes from: a file path, an in-memory ModelProto, or a zoo name."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from archcalc.errors import InputError
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
    """A path that exists, or the zoo file that ``source`` names."""
    path = Path(source)
    if path.exists():
        return path
    zoo = zoo_models()
    if str(source) in zoo:
        return zoo[str(source)]
    raise InputError(f"{source}: no such file or zoo model: check the path, or list the zoo with "
                     "'archcalc zoo'")


def is_design_text(source) -> bool:
    """A design written inline on the command line: ``"INPUT[32x32x3] -> CONV3-12 -> ..."``."""
    return isinstance(source, str) and "INPUT[" in source and not Path(source).exists()


def load_graph(source) -> Graph:
    """The IR of ``source``: a path (.onnx or .arch), a zoo name, design text, or an ``onnx.ModelProto``."""
    from archcalc.frontends.onnx_import import import_onnx

    if not isinstance(source, (str, os.PathLike)):
        return import_onnx(source)
    if is_design_text(source):
        from archcalc.frontends.dsl.build import build

        return build(str(source), "<inline>")
    path = resolve(source)
    if path.suffix == ".arch":
        from archcalc.frontends.dsl.build import build

        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read it as text ({exc})") from None
        return build(text, str(path))
    return import_onnx(path)
