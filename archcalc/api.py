"""The public entry points: each loads a model (a path, a ModelProto, a zoo name or design text)
once and hands the graph to the analyses, which never load anything themselves."""

from __future__ import annotations

import contextlib
import gc
import tempfile
from pathlib import Path

from archcalc.analysis.estimate import Estimate, analyse
from archcalc.analysis.fit import FitSpec, Verdict, largest_batch
from archcalc.conventions import DEFAULT_OPTIMIZER
from archcalc.errors import InputError
from archcalc.frontends.sources import load_graph


def estimate(source, batch: int | None = None, dims: dict[str, int] | None = None,
             inputs: dict[str, str | tuple[int, ...]] | None = None, dtype: str | None = None,
             strict: bool = False, attention: str | None = None) -> Estimate:
    """Estimate a model: a path (.onnx, .arch), an ``onnx.ModelProto``, design text, or a zoo name.

    ``batch`` binds each input's symbolic first dim (default 1); ``dims`` binds named symbolic dims;
    ``inputs`` sets whole input shapes (``{"x": "1x3x224x224"}``); ``dtype`` (fp32, fp16, bf16,
    int8, mixed) re-prices floating-point tensors. A node that cannot be sized before running makes
    what depends on it unknown (``Totals.unknown``); ``strict`` makes it an error. ``attention``:
    a config's attention kernel (``sources.KERNELS``).
    """
    with _collector_paused():
        return analyse(load_graph(source, attention), batch, dims, inputs, dtype, strict)


def fit_spec(source, capacity: int, mode: str = "inference", optimizer: str = DEFAULT_OPTIMIZER,
             dtype: str | None = None, runtime: str = "pytorch-cuda", overhead: int | None = None, dims=None,
             inputs=None, attention: str | None = None) -> FitSpec:
    """What ``fit`` judges: ``source`` loaded once (a config with the ``attention`` kernel), run as
    ``mode`` against ``capacity`` bytes."""
    return FitSpec(load_graph(source, attention), capacity, mode, optimizer, dtype, runtime, overhead, dims,
                   inputs)


def fit(source, capacity: int, batch: int | None = None, **how) -> Verdict | None:
    """The verdict at ``batch``; without one, the largest batch that fits (None: not even 1).
    ``how``: mode, optimizer, dtype, runtime, overhead, dims, inputs (see ``fit_spec``)."""
    spec = fit_spec(source, capacity, **how)
    with _collector_paused():
        return spec.verdict(batch) if batch else largest_batch(spec)


def plan(source, capacity: int, gpus: int = 8, nodes: int = 1, *, global_batch: int | None = None,
         micro_batches: int | None = None, strategy: str | None = None, units: str | None = None, dims=None,
         inputs=None, dtype: str | None = None, optimizer: str = DEFAULT_OPTIMIZER, device: str = "cuda",
         runtime: str = "pytorch-cuda", overhead: int | None = None, attention: str | None = None):
    """The multi-GPU strategies that make ``source``'s training step fit ``capacity`` bytes per GPU on
    ``gpus`` GPUs over ``nodes`` nodes, ranked (a ``PlanResult``); ``strategy`` ('dp8 zero3
    ckpt=full') judges that one alone; ``units``: a regex naming the units (see analysis.partition);
    ``attention``: a config's attention kernel."""
    from archcalc.analysis.plan.planner import Planner
    from archcalc.analysis.plan.reserved import summary as reserved
    from archcalc.analysis.plan.search import plan_result

    with _collector_paused():
        planner = Planner(load_graph(source, attention), optimizer, dtype, device, runtime, overhead, units, dims,
                          inputs)
        result = plan_result(planner, capacity, gpus, nodes, global_batch, micro_batches, strategy)
        if result.judged:
            result.meta["reserved"] = reserved(planner, result.rows[0])
    if result.judged and result.rows[0].strategy.engine == "megatron":
        result.meta["megatron"] = _megatron(source, result.rows[0], dims)
    return result


def largest_model(source, capacity: int, gpus: int, nodes: int, strategy: str | None, *,
                  global_batch: int | None = None, micro_batches: int | None = None, dims=None, inputs=None,
                  dtype: str | None = None, optimizer: str = DEFAULT_OPTIMIZER, device: str = "cuda",
                  runtime: str = "pytorch-cuda", attention: str | None = None):
    """The deepest model of ``source``'s widths (a config) that ``strategy`` fits on ``gpus`` GPUs of
    ``capacity`` bytes (``analysis.plan.largest``): (the answer, the config's own depth and parameters)."""
    from archcalc.analysis.plan.planner import MAX_UNITS, Planner
    from archcalc.analysis.plan.search import parse_strategy, plan_result
    from archcalc.frontends.hf_config import read_config, sizes, with_layers
    from archcalc.frontends.hf_schema import MAX_LAYERS
    from archcalc.frontends.sources import config_graph, config_path

    if strategy is None:
        raise InputError("--largest-model: the largest model is solved under one strategy; give --strategy")
    chosen = parse_strategy(strategy, gpus)  # refused before anything is built
    path = config_path(source)
    if path is None:
        raise InputError(f"{source}: --largest-model deepens a config's layers at its widths: give a config.json")
    config = read_config(path)

    def judge(depth: int, batch: int | None = global_batch, micro: int | None = micro_batches):
        planner = Planner(config_graph(with_layers(config, depth), str(path), attention), optimizer, dtype, device,
                          runtime, dims=dims, inputs=inputs)
        try:
            row = plan_result(planner, capacity, gpus, nodes, batch, micro, strategy).rows[0]
        except InputError:
            return None  # too shallow for the strategy's stages
        # --micro-batches with a global batch: at most that many a step (no more accumulation)
        asked = row.fits and (batch is None or micro is None or row.accumulation <= micro)
        return row, planner.ests[0].totals.params, asked

    with _collector_paused():
        own = sizes(config)["layers"]
        # The deepest the planner judges: its unit cap, less the units that do not repeat.
        probe = Planner(config_graph(with_layers(config, own), str(path), attention), dims=dims, inputs=inputs)
        limit = max(min(MAX_LAYERS, MAX_UNITS - (len(probe.units) - own)), 1)
        return _deepest(judge, own, limit, chosen.dp, chosen.micro_batches, global_batch is None), own


def _deepest(judge, own: int, limit: int, dp: int, m: int, solved: bool):
    """``largest_depth`` over ``judge``; ``solved`` (no global batch): a depth fits when micro-batch 1
    does, so the search judges micro-batch 1, whose memory is close to affine in depth (the secant
    steps), and then the depth found and the next as asked, their largest micro-batch solved."""
    from dataclasses import replace

    from archcalc.analysis.plan.largest import Largest, largest_depth

    if not solved:
        return replace(largest_depth(judge, own, limit), limit=limit)
    found = largest_depth(lambda d: judge(d, dp * m, m), own, limit)
    best = judge(found.layers) if found.layers else None
    deeper = judge(found.layers + 1) if found.layers < limit else None
    return Largest(found.layers, found.params, best[0] if best else None, deeper[0] if deeper else None, limit)


def _megatron(source, row, dims) -> dict:
    """Megatron-LM's own estimate of the judged row (``analysis.plan.megatron``), from the config."""
    from archcalc.analysis.plan import megatron
    from archcalc.frontends.hf_config import hyperparameters, read_config
    from archcalc.frontends.sources import config_path

    path = config_path(source)
    sequence = (dims or {}).get("sequence")
    if path is None or sequence is None:
        return {"unknown": "Megatron-LM's estimate reads a transformer's hyperparameters from its config.json and "
                           "the sequence from --dim sequence=N"}
    s = row.strategy
    micro = row.accumulation if s.pp > 1 else s.micro_batches
    model = megatron.Transformer(**hyperparameters(read_config(path)))
    w, a, total = megatron.theoretical_memory(model,
                                              megatron.run_of(s, sequence, row.shown, micro))
    return {"weight_and_optimizer_mb": round(w, 2), "activation_mb": round(a, 2), "total_mb": round(total, 2)}


def validate(source, batch=None, dims=None, inputs=None, levels=("disable", "all"), progress=None):
    """Run ``source`` in onnxruntime and measure it beside the estimate (see archcalc.measure)."""
    from archcalc.measure.validate import validate as run

    return run(source, batch, dims, inputs, levels, progress)


def _validation(model, batch, dims, inputs):
    """Run ``model`` in onnxruntime; a design is exported (random weights) first."""
    import onnx

    from archcalc.frontends.onnx_export import to_onnx

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
    from archcalc.frontends.sources import zoo_models
    from archcalc.render.files import build, report_folder_name, write

    names = list(zoo_models()) if zoo else list(models)
    written = []
    for model in names:
        if progress:
            progress(f"report for {model}")
        folder = output if len(names) == 1 and not zoo else output / report_folder_name(model)
        data = report_data(model, batch, dims, inputs, with_validation)
        written += write(build(model, report_folder_name(model), data), folder)
    return written


REPORT_GPUS = ("T4", "A100-80GB", "H100-80GB")
REPORT_CLUSTER = ("H100-80GB", 8)  # the GPU and count a report's multi-GPU plans are for
REPORT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
REPORT_OPTIMIZER = DEFAULT_OPTIMIZER


def report_data(model, batch=None, dims=None, inputs=None, with_validation=False):
    """Everything a report shows, computed here so that the renderer only arranges it: the
    estimate, the fit table and the memory-against-batch curve, and the validation if asked."""
    from archcalc.analysis.estimate import Estimates
    from archcalc.analysis.fit import batch_sweep, fit_table
    from archcalc.analysis.gpus import gpu
    from archcalc.analysis.plan.planner import Planner
    from archcalc.analysis.plan.search import plan_result
    from archcalc.analysis.walk.infer import batch_fixed
    from archcalc.render.files import ReportData

    graph = load_graph(model)
    graph.trainable()  # a report's fit and plan sections are training's
    card, count = gpu(REPORT_CLUSTER[0]), REPORT_CLUSTER[1]
    with _collector_paused():
        estimates = Estimates(graph, dims, inputs)  # one analysis per batch for every GPU and mode
        # Unbatched, a graph whose batch is free is analysed at 1, which the fit table reads too.
        est = estimates.at(batch or (None if batch_fixed(graph, dims, inputs) else 1))
        try:
            fits = fit_table(graph, [gpu(n) for n in REPORT_GPUS], REPORT_OPTIMIZER, dims, inputs, estimates)
            sweep = batch_sweep(graph, list(REPORT_BATCHES), REPORT_OPTIMIZER, dims, inputs, estimates)
            planner = Planner(graph, REPORT_OPTIMIZER, dims=dims, inputs=inputs, estimates=estimates)
            plan, no_fit = plan_result(planner, card.capacity, count, 1), ""
        except InputError as exc:  # a fixed batch: no largest batch to solve for
            fits, sweep, plan, no_fit = [], {}, None, str(exc)
    validation = _validation(model, batch, dims, inputs) if with_validation else None
    return ReportData(est, fits, list(REPORT_BATCHES), sweep, REPORT_OPTIMIZER, no_fit, validation, plan,
                      card.name)


@contextlib.contextmanager
def _collector_paused():
    """Building a graph allocates many small objects and frees none, so the cyclic garbage
    collector's passes find nothing while their cost grows with the heap: 30% of the time of a
    20,000-node graph. Paused while the estimate is built, restored after."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def serve(source, gpu, context: int, *, dims: dict[str, int] | None = None, **how):
    """How many sequences of ``context`` tokens ``gpu`` (a catalog GPU) serves: ``source`` loaded as a
    server runs it (a config's attention fused) and handed to ``archcalc.analysis.serve.analysis.serve``
    (``how``: tp, sequences, kv_dtype, runtime, engine, utilization, block_size, batched_tokens,
    max_seqs, non_torch). Returns its ``ServeResult``."""
    from archcalc.analysis.serve.analysis import serve as run
    from archcalc.frontends.sources import serving_graph

    graph = serving_graph(source)
    with _collector_paused():
        return run(graph, gpu, context, dims=dims, **how)
