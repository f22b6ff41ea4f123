"""The command line: thin click commands, each calling one library function and printing.

Library errors (``ArchcalcError``) become a one-line ``error:`` message and exit code 2.
Heavy modules (onnx, pandas, rich) are imported inside commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import functools
import sys

import click

FORMATS = ("table", "markdown", "csv", "json")


def _fail_cleanly(fn):
    """Turn archcalc's errors into ``error: <message>`` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from archcalc.errors import ArchcalcError

        try:
            return fn(*args, **kwargs)
        except ArchcalcError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


def _pairs(values: tuple[str, ...], flag: str, convert=str) -> dict:
    out = {}
    for text in values:
        name, sep, value = text.rpartition("=")
        try:
            out[name] = convert(value)
        except ValueError:
            name = ""
        if not sep or not name:
            raise click.BadParameter(f"'{text}' should be NAME=VALUE", param_hint=flag)
    return out


def shape_options(fn):
    """--batch, --dim and --input: how symbolic dims get their values."""
    fn = click.option("--input", "inputs", multiple=True, metavar="NAME=1x3x224x224",
                      help="Set a whole input's shape.")(fn)
    fn = click.option("--dim", "dims", multiple=True, metavar="NAME=VALUE",
                      help="Bind a named symbolic dim (e.g. --dim sequence=128).")(fn)
    fn = click.option("--batch", type=click.IntRange(min=1), default=None,
                      help="Batch size: binds each input's symbolic first dim [default: 1].")(fn)
    return fn


@click.group()
@click.version_option(package_name="archcalc")
def main():
    """archcalc: what a network costs before you run it -- shapes, parameters, MACs and memory."""


@main.command()
@click.argument("model", default="torchvision/vgg16")
@shape_options
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16", "int8"]), default=None,
              help="Price floating-point tensors at this precision [default: as in the model].")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--top", type=click.IntRange(min=1), default=None, help="Show only the N heaviest layers.")
@click.option("--sort", type=click.Choice(["macs", "params", "activations", "flops"]), default="macs",
              show_default=True, help="What 'heaviest' means for --top.")
@_fail_cleanly
def estimate(model, batch, dims, inputs, dtype, fmt, top, sort):
    """Per-layer shapes, parameters, MACs and activation memory of MODEL, then the totals.

    MODEL is an .onnx file or a zoo name (see `archcalc zoo`).

    Example: archcalc estimate resnet50.onnx --batch 8 --dtype fp16 --top 10
    """
    from archcalc.analysis import estimate as run
    from archcalc.report import render

    result = run(model, batch=batch, dims=_pairs(dims, "--dim", int), inputs=_pairs(inputs, "--input"),
                 dtype=dtype)
    click.echo(render(result, fmt, top=top, sort=sort), nl=False)


@main.command()
def zoo():
    """List the models shipped with archcalc, usable by name.

    Example: archcalc zoo
    """
    from archcalc.sources import zoo_models

    for name, path in zoo_models().items():
        click.echo(f"{name}\t{path.name}")


if __name__ == "__main__":
    main()
