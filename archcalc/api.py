"""Which reports to make and where: one model, several, or the whole zoo; validation on request."""

from __future__ import annotations

import tempfile
from pathlib import Path

from archcalc.analysis.estimate import estimate
from archcalc.frontends.sources import load_graph, zoo_models
from archcalc.render.files import build, report_folder_name, write


def _validation(model, batch, dims, inputs):
    """Run ``model`` in onnxruntime; a design is exported (random weights) first."""
    import onnx

    from archcalc.frontends.onnx_export import to_onnx
    from archcalc.measure.validate import validate

    graph = load_graph(model)
    if graph.source.endswith(".onnx"):
        return validate(model, batch, dims, inputs, levels=("disable",))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "design.onnx"
        onnx.save(to_onnx(graph), str(path))
        return validate(path, batch, dims, inputs, levels=("disable",))


def run_reports(models, output: Path, zoo: bool, batch=None, dims=None, inputs=None, with_validation=False,
                progress=None) -> list[Path]:
    """Write the reports; with one named model, ``output`` is its folder, else the parent of one per model."""
    names = list(zoo_models()) if zoo else list(models)
    written = []
    for model in names:
        if progress:
            progress(f"report for {model}")
        folder = output if len(names) == 1 and not zoo else output / report_folder_name(model)
        est = estimate(model, batch=batch, dims=dims, inputs=inputs)
        validation = _validation(model, batch, dims, inputs) if with_validation else None
        written += write(build(model, report_folder_name(model), est, dims, inputs, validation), folder)
    return written
