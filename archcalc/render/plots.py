"""Figures for reports, as PNG bytes (matplotlib, imported only here: it costs 0.6 s).

Each figure answers one question at a glance: where the activations and the parameters sit (the
notes' point: memory early, parameters in the first FC), how activation memory rises and falls over
the execution order, how memory grows with the batch against real GPUs, and how far the estimate is
from onnxruntime's measurement per layer.
"""

from __future__ import annotations

import io

MiB = 1 << 20


def _figure(width=10, height=4.2):
    # A Figure of its own, drawn by Agg when saved: pyplot (its figure managers and backends, 0.1 s
    # to import) is not needed to write a PNG.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.subplots()


def _png(fig) -> bytes:
    out = io.BytesIO()
    fig.tight_layout()
    # tight_layout leaves a placeholder layout engine behind, for which savefig draws the whole figure
    # once more before the real draw (matplotlib/backend_bases.py, print_figure: "trigger a draw ...
    # to make sure CL works"); the placeholder lays nothing out, so dropping it changes no pixel.
    fig.set_layout_engine(None)
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


def _bars(ax, heights: list[float], color: str) -> None:
    """Vertical bars 0.8 wide at 0, 1, 2, ..., as ``ax.bar`` draws them but as one collection: bar
    makes a Rectangle artist per bar, each laid out, limit-updated and drawn on its own (two thirds of
    a 175-layer figure's time); the polygons, colour and snapping are the same, and so are the pixels."""
    from matplotlib.collections import PolyCollection

    outlines = [[(i - 0.4, 0), (i - 0.4, h), (i + 0.4, h), (i + 0.4, 0)] for i, h in enumerate(heights)]
    bars = PolyCollection(outlines, facecolors=color, edgecolors="none", linewidths=0)
    bars.sticky_edges.y.append(0)  # as bar's: the axis starts at the bars' foot, with no margin below
    ax.add_collection(bars, autolim=True)
    ax.autoscale_view()


def per_layer(names: list[str], activations: list[int], params: list[int], title: str) -> bytes:
    """Activation memory and parameters of each layer, side by side, in execution order."""
    fig, ax = _figure(10, 5.5)
    fig.clf()
    top, bottom = fig.subplots(2, 1, sharex=True)
    x = range(len(names))
    _bars(top, [a / MiB for a in activations], "#3b7dd8")
    top.set_ylabel("activations (MiB)")
    top.set_title(f"{title}: activation memory and parameters per layer")
    _bars(bottom, [p / 1e6 for p in params], "#d8823b")
    bottom.set_ylabel("parameters (millions)")
    bottom.set_xlabel("layer, in execution order")
    step = max(1, len(names) // 24)
    bottom.set_xticks(list(x)[::step], names[::step], rotation=90, fontsize=7)
    return _png(fig)


def timeline(live: list[int], peak_at: int, peak_name: str, title: str) -> bytes:
    """Activation memory alive at each step of the execution order, the peak marked."""
    fig, ax = _figure()
    ax.plot(range(len(live)), [v / MiB for v in live], color="#3b7dd8")
    ax.axvline(peak_at, color="#c0392b", linestyle="--")
    ax.annotate(f"peak {live[peak_at] / MiB:.1f} MiB\n{peak_name}", (peak_at, live[peak_at] / MiB),
                textcoords="offset points", xytext=(8, -28), fontsize=8, color="#c0392b")
    ax.set_xlabel("step of the execution order")
    ax.set_ylabel("live activations (MiB)")
    ax.set_title(f"{title}: activation memory over the execution order")
    return _png(fig)


def memory_vs_batch(batches: list[int], series: dict[str, list[int]], gpus: dict[str, int],
                    largest: dict[str, int], title: str) -> bytes:
    """Total memory against the batch, with GPU capacities and the largest batch that fits each."""
    from matplotlib.ticker import FuncFormatter

    fig, ax = _figure()
    gib = 1 << 30
    for label, values in series.items():
        ax.plot(batches, [v / gib for v in values], marker="o", label=label)
    by_capacity: dict[int, list[str]] = {}
    for name, capacity in gpus.items():
        by_capacity.setdefault(capacity, []).append(name)
    for i, (capacity, names) in enumerate(sorted(by_capacity.items())):
        ax.axhline(capacity / gib, color=f"C{i + 3}", linestyle=":", linewidth=1)
        ax.text(batches[0], capacity / gib, f" {' / '.join(names)} ({capacity / gib:.0f} GiB)", fontsize=8,
                va="bottom", color=f"C{i + 3}")
        for name in names:  # where training crosses this card's capacity: the largest batch that fits
            b = largest.get(f"{name} train")
            if b:
                ax.plot([b], [capacity / gib], marker="v", color=f"C{i + 3}")
                ax.annotate(f"{b}", (b, capacity / gib), xytext=(4, 4), textcoords="offset points", fontsize=8,
                            color=f"C{i + 3}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("batch size")
    ax.set_ylabel("memory (GiB)")
    ax.set_title(f"{title}: memory against batch size (markers: largest training batch per GPU)")
    ax.legend(fontsize=8)
    return _png(fig)


def plan_terms(labels: list[str], terms: dict[str, list[int]], capacity: int, title: str) -> bytes:
    """Each strategy's per-GPU memory as stacked terms, against the GPU's capacity."""
    fig, ax = _figure(10, 0.45 * len(labels) + 1.6)
    gib = 1 << 30
    left = [0.0] * len(labels)
    for k, (term, values) in enumerate(terms.items()):
        ax.barh(labels, [v / gib for v in values], left=left, color=f"C{k}", label=term)
        left = [a + v / gib for a, v in zip(left, values)]
    ax.axvline(capacity / gib, color="black", linestyle=":", linewidth=1)
    ax.text(capacity / gib, -0.6, f" capacity {capacity / gib:.1f} GiB", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("memory per GPU (GiB), at each strategy's largest micro-batch")
    ax.set_title(f"{title}: multi-GPU strategies")
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def estimate_vs_measured(names: list[str], estimated: list[int], measured: list[int], title: str) -> bytes:
    """Each layer's output bytes: estimated against what onnxruntime's profiler reported."""
    fig, ax = _figure()
    ax.scatter([m / MiB for m in measured], [e / MiB for e in estimated], s=12, color="#3b7dd8")
    top = max([*estimated, *measured, 1]) / MiB
    ax.plot([0, top], [0, top], color="grey", linewidth=1, label="estimate = measurement")
    ax.set_xlabel("measured output (MiB, onnxruntime profiler)")
    ax.set_ylabel("estimated output (MiB)")
    ax.set_title(f"{title}: estimate against measurement per layer ({len(names)} layers)")
    ax.legend(fontsize=8)
    return _png(fig)
