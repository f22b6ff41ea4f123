"""Estimate against measurement: each measured figure beside its estimate, and the verdict.

The verdict -- passed or not, and why -- is decided here, so every renderer shows the same one.
"""

from __future__ import annotations

from dataclasses import dataclass

from archcalc.measure.validate import Validation


def validation_figures(v, im=None) -> list[tuple[str, int, int]]:
    """Each measured byte figure beside its estimate: (channel, estimate, measured). ``im``: the
    estimate's onnxruntime-cpu inference memory, where the caller has it already."""
    im = im or v.estimate.inference_memory("onnxruntime-cpu")
    out = []
    if v.profiler_peak is not None:
        out.append(("activation peak (profiler, arena)", im.activation_peak, v.profiler_peak))
    if v.profiler_peak_later is not None and im.pattern_peak:
        out.append(("later runs: pattern block + outputs (profiler)", im.pattern_peak, v.profiler_peak_later))
    for p in v.process_peaks:
        out += [(f"activation peak, first run (process, opt {p.level})", im.activation_peak, p.runs[0]),
                (f"activation peak over runs (process, opt {p.level})", im.activations_held, p.run_peak),
                (f"total (process, opt {p.level})", im.steady, p.resident_after_load + p.run_peak),
                (f"load peak (process, opt {p.level})", im.load_peak - im.runtime, p.load_peak)]
    for g in v.cuda_peaks:
        gm = v.estimate.inference_memory("onnxruntime-cuda", overhead=g.context)
        default = v.estimate.inference_memory("onnxruntime-cuda").runtime
        out += [("CUDA context (default vs identity model)", default, g.context),
                (f"weights on the GPU (opt {g.level})", gm.weights, g.weights),
                (f"inputs + activation peak (GPU, opt {g.level})", gm.inputs + gm.activation_peak, g.run_peak),
                (f"total (GPU, opt {g.level})", gm.steady, g.total)]
    return out


@dataclass(frozen=True)
class Judgement:
    """Whether a validation passes: every shape and node byte count equal (a data-dependent one within
    its bound), and the activation peak within tolerance of the measurement it is judged against (the
    profiler's arena, else the process) -- or, where the estimate is a bound, on the bound's side."""

    figures: list[tuple[str, int, int]]
    estimated_peak: int
    judged_peak: int | None
    peak_ok: bool
    bytes_equal: int

    def failures(self, v: Validation) -> list[str]:
        return [w for w, bad in (("shapes differ", v.mismatches),
                                 ("node bytes differ", self.bytes_equal != len(v.nodes)),
                                 ("activation peak out of tolerance", not self.peak_ok)) if bad]


def judge(v: Validation, tolerance: float, abs_tolerance: int) -> Judgement:
    im = v.estimate.inference_memory("onnxruntime-cpu")
    judged = v.profiler_peak if v.profiler_peak is not None else \
        next((p.run_peak for p in v.process_peaks if p.level == "disable"), None)
    slack = max(tolerance * judged, abs_tolerance) if judged is not None else 0
    status = v.estimate.totals.status  # a bound is judged as one: the measurement on its side of it
    peak_ok = judged is None or status == "partial" or {
        "exact": abs(im.activation_peak - judged) <= slack,
        "upper bound": im.activation_peak + slack >= judged,
        "lower bound": im.activation_peak - slack <= judged}[status]
    bytes_equal = sum(1 for n in v.nodes if n.agrees)
    return Judgement(validation_figures(v, im), im.activation_peak, judged, peak_ok, bytes_equal)
