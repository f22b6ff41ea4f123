"""The command line: thin click commands, each calling one library function and printing.

Library errors (``ArchcalcError``) become a one-line ``error:`` message and exit code 2.
Heavy modules (onnx, pandas, matplotlib) are imported inside commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from archcalc.analysis.memory.runtimes import RUNTIMES
from archcalc.conventions import DEFAULT_OPTIMIZER
from archcalc.options import (
    OneLineErrors,
    attention_option,
    batches,
    budget,
    dtype_option,
    fail_cleanly,
    memory_options,
    optimizer_option,
    pairs,
    refuse_unused,
    serve_options,
    shape_options,
    size,
)
from archcalc.units import MAX_SIZE

FORMATS = ("table", "markdown", "csv", "json")


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="archcalc")
def main():
    """archcalc: what a network costs before you run it -- shapes, parameters, MACs and memory.

    Training is priced with Adam's state unless --optimizer says otherwise (every command alike).
    """


@main.command()
@click.argument("model", default="vgg16")
@click.option("--batch", type=click.IntRange(min=1, max=MAX_SIZE), default=None,
              help="Batch size: binds each input's symbolic first dim [default: 1].")
@shape_options
@dtype_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--top", type=click.IntRange(min=1), default=None, help="Show only the N heaviest layers.")
@click.option("--sort", type=click.Choice(["macs", "params", "activations", "flops"]), default=None,
              help="Order the layers by this, largest first, in every format: JSON too, so that each format "
                   "shows the same rows in the same order. Without it, execution order. With --top: what "
                   "'heaviest' means [default: macs].")
@click.option("--mode", type=click.Choice(["inference", "train"]), default=None,
              help="Add the memory terms of inference, or of one training step (and saved bytes per layer).")
@memory_options(None)
@click.option("--workspace", is_flag=True, help="Count the largest per-op scratch (a conv's im2col matrix).")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default=None,
              help="Training: the device whose PyTorch defaults apply [default: cuda] (Adam per tensor on "
                   "cpu, multi-tensor on cuda; dropout keeps a mask of the input's dtype on cpu, of bools on "
                   "cuda).")
@click.option("--view", type=click.Choice(["layers", "notes"]), default="layers", show_default=True,
              help="notes: the CS231n notes' table (HxWxC, activations, weights without biases) and what "
                   "their totals count.")
@click.option("--strict", is_flag=True,
              help="A node whose shapes cannot be known before running is an error, not shown as unknown.")
@attention_option
@fail_cleanly
def estimate(model, batch, dims, inputs, dtype, fmt, top, sort, mode, optimizer, runtime_name, runtime_overhead,
             workspace, device, view, strict, attention):
    """Per-layer shapes, parameters, MACs and activation memory of MODEL, then the totals.

    MODEL is an .onnx file, an .arch design, a zoo name (see `archcalc zoo`) or design text.

    Example: archcalc estimate resnet50.onnx --batch 8 --dtype fp16 --top 10
    """
    from archcalc.analysis.estimate import DEFAULT_RUNTIME, TRAINING_RUNTIME
    from archcalc.api import estimate as run
    from archcalc.render.text import MemoryView, render

    refuse_unused({"--optimizer": optimizer, "--device": device}, mode != "train", "--mode train")
    refuse_unused({"--runtime": runtime_name, "--runtime-overhead": runtime_overhead, "--workspace": workspace},
                   mode is None, "--mode inference or --mode train")
    refuse_unused({"--mode": mode, "--top": top}, view == "notes", "the layers view (the notes' table is whole)")
    result = run(model, batch=batch, dims=pairs(dims, "--dim", int), inputs=pairs(inputs, "--input"),
                 dtype=dtype, strict=strict, attention=attention)
    if view == "notes":
        from archcalc.render.notes import render_notes

        click.echo(render_notes(result, fmt), nl=False)
        return
    view = None
    if mode:
        overhead = size(runtime_overhead, "--runtime-overhead")
        training = result.training_memory(optimizer or DEFAULT_OPTIMIZER, runtime=runtime_name or TRAINING_RUNTIME,
                                          overhead=overhead, device=device or "cuda") if mode == "train" else None
        view = MemoryView(result.inference_memory(runtime_name or DEFAULT_RUNTIME, overhead, workspace), training)
    click.echo(render(result, fmt, top=top, sort=sort, memory=view), nl=False)


@main.command()
@click.argument("model", default="vgg16")
@click.option("--gpu", "gpu_name", default=None, help="A GPU from `archcalc gpus`.")
@click.option("--memory", "memory_size", default=None, metavar="SIZE", help="A budget instead: 24GiB, 80GB.")
@click.option("--mode", type=click.Choice(["inference", "train", "serve"]), default="inference", show_default=True)
@click.option("--batch", type=click.IntRange(min=1, max=MAX_SIZE), default=None,
              help="Judge this batch; without it, find the largest batch that fits.")
@click.option("--sweep", default=None, metavar="1,2,4,...", help="A table of these batch sizes.")
@shape_options
@dtype_option
@memory_options("pytorch-cuda")
@serve_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@attention_option
@fail_cleanly
def fit(model, gpu_name, memory_size, mode, batch, sweep, dims, inputs, dtype, optimizer, runtime_name,
        runtime_overhead, fmt, attention, **serving):
    """Does MODEL fit a GPU (or a budget), and up to what batch? Exit 0: fits, 1: does not, 2: error.
    With --mode serve: how many sequences of --context tokens its KV cache holds.

    Example: archcalc fit resnet50.onnx --gpu A100-80GB --mode train --dtype mixed;
    archcalc fit config.json --mode serve --gpu A100-80GB --context 8192
    """
    from archcalc.analysis.fit import largest_batch
    from archcalc.api import fit_spec
    from archcalc.render.text import render_fit

    if (gpu_name is None) == (memory_size is None):
        raise click.UsageError("give exactly one of --gpu NAME or --memory SIZE")
    capacity, card = budget(gpu_name, memory_size)
    if mode == "serve":
        _serve(model, card or _budget_gpu(memory_size, capacity), fmt, {
            "--batch": batch, "--sweep": sweep, "--input": inputs or None, "--dtype": dtype,
            "--optimizer": optimizer, "--runtime-overhead": runtime_overhead,
            "--attention": attention}, dims, **serving)  # a server runs its own fused kernels
    refuse_unused({f"--{k.replace('_', '-')}": v for k, v in serving.items()
                   if v not in (None, 1, "auto", "vllm", "v1")}, True, "--mode serve")
    refuse_unused({"--optimizer": optimizer}, mode != "train", "--mode train")
    refuse_unused({"--batch": batch}, bool(sweep), "a single batch (--sweep names its own)")
    overhead = size(runtime_overhead, "--runtime-overhead")
    spec = fit_spec(model, capacity, mode, optimizer or DEFAULT_OPTIMIZER, dtype, runtime_name, overhead,
                    pairs(dims, "--dim", int), pairs(inputs, "--input"), attention)
    if sweep or batch:
        verdicts = [spec.verdict(b) for b in (batches(sweep) if sweep else [batch])]
        click.echo(render_fit(spec, card, verdicts, None, fmt, sweep=bool(sweep)), nl=False)
        sys.exit(0 if verdicts[0].fits else 1)
    best = largest_batch(spec)
    click.echo(render_fit(spec, card, [spec.verdict(1)] if best is None else [best], best, fmt, searched=True),
               nl=False)
    sys.exit(0 if best else 1)


@main.command()
@click.argument("model")
@click.option("--batch", type=click.IntRange(min=1, max=MAX_SIZE), default=None, help="Batch size [default: 1].")
@shape_options
@click.option("--opt-level", type=click.Choice(["disable", "all", "both"]), default="both", show_default=True,
              help="onnxruntime graph optimizations for the process peak: as written, as deployed, or both.")
@click.option("--tolerance", type=float, default=0.05, show_default=True,
              help="Largest relative error of the activation peak that passes.")
@click.option("--abs-tolerance", default="2MiB", show_default=True, metavar="SIZE",
              help="An error this small passes whatever its relative size (small batches).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress messages.")
@fail_cleanly
def validate(model, batch, dims, inputs, opt_level, tolerance, abs_tolerance, fmt, quiet):
    """Run MODEL in onnxruntime and set the measurements beside the estimate.

    Exit 0: every shape matches and the activation peak is within tolerance; 1: a mismatch; 2: an error.

    Example: archcalc validate resnet50.onnx --batch 8
    """
    from archcalc.api import validate as run
    from archcalc.measure.compare import judge
    from archcalc.render.validation import validation_json, validation_text

    levels = ("disable", "all") if opt_level == "both" else (opt_level,)
    progress = None if quiet else (lambda msg: click.echo(f"... {msg}", err=True))
    result = run(model, batch, pairs(dims, "--dim", int), pairs(inputs, "--input"), levels, progress)
    verdict = judge(result, tolerance, size(abs_tolerance, "--abs-tolerance") or 0)
    click.echo((validation_json if fmt == "json" else validation_text)(result, verdict), nl=False)
    sys.exit(1 if verdict.failures(result) else 0)


@main.command()
@click.argument("design")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The .onnx file to write.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights.")
@fail_cleanly
def export(design, output, seed):
    """Write a design (an .arch file, a zoo name or inline text) as an ONNX model with random weights.

    Example: archcalc export vgg16 -o vgg16.onnx
    """
    import onnx

    from archcalc.frontends.onnx_export import to_onnx
    from archcalc.frontends.sources import load_graph
    from archcalc.render.atomic import atomic_file

    graph = load_graph(design)
    if graph.source.endswith(".onnx") or graph.source.startswith("<ModelProto"):
        raise click.UsageError(f"{design} is already an ONNX model")
    with atomic_file(Path(output)) as tmp:  # made first: an unwritable place fails before the weights
        onnx.save(to_onnx(graph, seed), str(tmp))
    click.echo(f"wrote {output}: {len(graph.layers)} nodes")


@main.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--batch", type=click.IntRange(min=1, max=MAX_SIZE), default=None, help="Batch size [default: 1].")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "json"]), default="table",
              show_default=True)
@click.option("--dim", "dims", multiple=True, metavar="NAME=VALUE",
              help="Bind a named symbolic dim of the models (e.g. --dim sequence=128).")
@click.option("-o", "--output", default=None, type=click.Path(file_okay=False),
              help="Also write compare.md and compare.html into this folder.")
@fail_cleanly
def compare(models, batch, dims, fmt, output):
    """Put models or designs side by side: parameters, MACs, activations, peak, receptive field.

    Example: archcalc compare "INPUT[56x56x64] -> CONV7-64" "INPUT[56x56x64] -> [CONV3-64 -> RELU]*3"
    """
    from archcalc.api import estimate as run
    from archcalc.render.text import render_compare

    ests = [(m, run(m, batch=batch, dims=pairs(dims, "--dim", int) or None)) for m in models]
    written = []
    if output:  # written before anything is printed: an unwritable folder is the only output
        from archcalc.render.files import write_compare

        written = write_compare(ests, Path(output))
    click.echo(render_compare(ests, fmt), nl=False)
    for path in written:
        click.echo(f"wrote {path}", err=True)


@main.command()
@click.argument("models", nargs=-1)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="The report folder (with --zoo or several models: the folder that holds one per model).")
@click.option("--zoo", is_flag=True, help="Report every zoo model, one folder each.")
@click.option("--batch", type=click.IntRange(min=1, max=MAX_SIZE), default=None, help="Batch size [default: 1].")
@shape_options
@click.option("--validate", "with_validation", is_flag=True,
              help="Run the model in onnxruntime and add the measurements (designs are exported first).")
@click.option("--quiet", is_flag=True, help="No progress messages.")
@fail_cleanly
def report(models, output, zoo, batch, dims, inputs, with_validation, quiet):
    """Write report.md, report.html, layers.csv, summary.json and PNG figures for each model.

    Example: archcalc report resnet50 -o reports/resnet50
    """


    from archcalc.api import run_reports

    if zoo == bool(models):
        raise click.UsageError("name the models, or give --zoo (not both)")
    progress = None if quiet else (lambda msg: click.echo(f"... {msg}", err=True))
    shapes = pairs(dims, "--dim", int), pairs(inputs, "--input")
    for path in run_reports(models, Path(output), zoo, batch, *shapes, with_validation, progress):
        if not quiet:
            click.echo(f"wrote {path}", err=True)


@main.command()
@click.argument("model", default="vgg16")
@click.option("--gpu", "gpu_name", default="H100-80GB", show_default=True, help="A GPU from `archcalc gpus`.")
@click.option("--memory", "memory_size", default=None, metavar="SIZE", help="A per-GPU budget instead of --gpu.")
@click.option("--gpus", type=click.IntRange(min=1, max=1 << 20), default=8, show_default=True,
              help="GPUs in all.")
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Nodes they are spread over (tensor parallelism stays within one).")
@click.option("--global-batch", type=click.IntRange(min=1, max=MAX_SIZE), default=None,
              help="Samples per optimizer step: micro-batch x accumulation x data-parallel degree.")
@click.option("--micro-batches", type=click.IntRange(min=1), default=None,
              help="Micro-batches a step, as stated with --strategy [default: 2 x pipeline stages, else 1].")
@click.option("--strategy", default=None, metavar="'dp8 zero3 ckpt=full'",
              help="Judge this one strategy (exit 0: fits, 1: does not).")
@click.option("--units", "units_pattern", default=None, metavar="REGEX",
              help="Name the units (FSDP wraps, checkpoints, stages) by a regex on layer names.")
@click.option("--top", type=click.IntRange(min=1), default=12, show_default=True, help="Rows that fit, shown.")
@click.option("--largest-model", is_flag=True, help="With --strategy and a config: the deepest model of its "
              "widths that the strategy fits (the ZeRO paper's question), each depth judged whole.")
@click.option("--deepspeed-estimators", is_flag=True,
              help="Also print what DeepSpeed's own estimators (estimate_zero2/3_model_states_mem_needs) say, "
                   "with their conventions, from this graph's parameter counts.")
@shape_options
@dtype_option
@optimizer_option(DEFAULT_OPTIMIZER)
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True,
              help="Whose PyTorch defaults apply (see `estimate --device`).")
@click.option("--runtime", "runtime_name", type=click.Choice(list(RUNTIMES)), default="pytorch-cuda",
              show_default=True, help="Whose constant each GPU adds.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@attention_option
@fail_cleanly
def plan(model, gpu_name, memory_size, gpus, nodes, global_batch, micro_batches, strategy, units_pattern, top,
         largest_model, deepspeed_estimators, dims, inputs, dtype, optimizer, device, runtime_name, fmt,
         attention):
    """Which multi-GPU strategies make MODEL's training step fit, ranked, with per-GPU memory by term.

    Example: archcalc plan model.onnx --gpu H100-80GB --gpus 16 --nodes 2 --dtype mixed --global-batch 512
    """
    from archcalc.api import plan as run
    from archcalc.render.plan import render_plan_result

    if gpus % nodes:
        raise click.BadParameter(f"{gpus} GPUs do not spread evenly over {nodes} nodes", param_hint="--gpus")
    capacity, card = budget(gpu_name if memory_size is None else None, memory_size)
    how = {"global_batch": global_batch, "micro_batches": micro_batches, "dims": pairs(dims, "--dim", int),
           "inputs": pairs(inputs, "--input"), "dtype": dtype, "optimizer": optimizer, "device": device,
           "runtime": runtime_name, "attention": attention}
    if largest_model:
        from archcalc.api import largest_model as largest
        from archcalc.render.plan import render_largest

        found, own = largest(model, capacity, gpus, nodes, strategy, **how)
        click.echo(render_largest(found, own, strategy, fmt), nl=False)
        sys.exit(0 if found.layers else 1)
    result = run(model, capacity, gpus, nodes, strategy=strategy, units=units_pattern, **how)
    click.echo(render_plan_result(result, card, top, fmt), nl=False)
    if deepspeed_estimators:
        from archcalc.render.plan import render_deepspeed

        m = result.meta
        click.echo(render_deepspeed(m["params"], m["largest_layer_params"], gpus // nodes, nodes), nl=False)
    sys.exit(0 if any(r.fits for r in result.rows) else 1)


@main.command()
def gpus():
    """List the GPU catalog: memory as the vendor states it and as the driver reports it (what `fit` and
    `plan` judge against), each with its source.

    Example: archcalc gpus
    """
    from archcalc.analysis.gpus import CATALOG

    for g in CATALOG.values():
        judged = f"judged at {g.capacity:>16,} B ({g.capacity_source})"
        click.echo(f"{g.name:<11} {g.vendor_memory:>7}  {judged}  {g.year}")
        driver = f"; driver: {g.reported_source}" if g.reported_source else ""
        click.echo(f"{'':<11} vendor: {g.source}{driver}")


@main.command()
def ops():
    """Print the ops archcalc has rules for: shape, parameters, cost, in place, what training keeps
    (markdown; docs/ops.md is this output).

    Example: archcalc ops > docs/ops.md
    """
    from archcalc.render.ops_doc import ops_markdown

    click.echo(ops_markdown(), nl=False)


@main.command()
def zoo():
    """List the models shipped with archcalc, usable by name.

    Example: archcalc zoo
    """
    from archcalc.frontends.sources import zoo_models, zoo_summary

    for name, path in zoo_models().items():
        click.echo(f"{name:<28} {zoo_summary(path)}")


def _budget_gpu(memory_size: str, capacity: int):
    """A --memory budget as the GPU serving sizes itself against."""
    from archcalc.analysis.gpus import GPU

    return GPU(memory_size, memory_size, capacity, 0, "--memory", None, capacity, "--memory")


def _serve(model, card, fmt, unused, dims, context, sequences, tp, kv_dtype, serve_runtime, engine, utilization,
           block_size, batched_tokens, max_seqs, non_torch):
    from archcalc.api import serve
    from archcalc.render.serve import render_serve

    refuse_unused(unused, True, "--mode inference or train (serving sizes its own prefill)")
    if context is None:
        raise click.UsageError("--mode serve needs --context TOKENS (the tokens of each sequence)")
    result = serve(model, card, context, dims=pairs(dims, "--dim", int) or None, tp=tp, sequences=sequences,
                   kv_dtype=kv_dtype, runtime=serve_runtime, engine=engine, utilization=utilization,
                   block_size=block_size, batched_tokens=batched_tokens, max_seqs=max_seqs,
                   non_torch=size(non_torch, "--non-torch"))
    click.echo(render_serve(result, fmt), nl=False)
    sys.exit(0 if result.fits else 1)


if __name__ == "__main__":  # last: the helpers above must exist before a command runs
    main()
