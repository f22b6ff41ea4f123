"""The command line's shared parts: the options several commands take, the checks on every value
a user gives, and how errors reach the terminal (one ``error:`` line, exit code 2)."""

from __future__ import annotations

import functools
import math
import os
import sys

import click

from archcalc.analysis.memory.runtimes import RUNTIMES
from archcalc.conventions import DEFAULT_OPTIMIZER
from archcalc.dtypes import PRECISIONS
from archcalc.units import MAX_SIZE


def fail_cleanly(fn):
    """Turn archcalc's errors, and the system's refusals to read or write a file, into one
    ``error: <message>`` line on stderr (names from files escaped) and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from archcalc.errors import ArchcalcError, DSLError
        from archcalc.units import printable

        try:
            return fn(*args, **kwargs)
        except ArchcalcError as exc:  # a design's error keeps its caret line under the place
            click.echo(f"error: {printable(str(exc), keep_newlines=isinstance(exc, DSLError))}", err=True)
        except MemoryError:
            click.echo("error: out of memory: the model is too large for this machine at this size; try a "
                       "smaller --batch", err=True)
        except KeyboardInterrupt:  # outputs are written atomically: nothing partial is left
            click.echo("error: interrupted: nothing half-written was left behind", err=True)
            sys.exit(130)
        except OSError as exc:  # an output folder that cannot be made, a disk that is full
            where = exc.filename or "the output"
            click.echo(f"error: {printable(str(where))}: cannot write or read it ({exc.strerror or exc}): "
                       "choose another path", err=True)
        sys.exit(2)

    return wrapper


def pairs(values: tuple[str, ...], flag: str, convert=str) -> dict:
    """NAME=VALUE options as a dict; the values' ranges are checked where they are used."""
    out = {}
    for text in values:
        name, sep, value = text.rpartition("=")
        if not sep or not name:
            raise click.BadParameter(f"'{text}' should be NAME=VALUE", param_hint=flag)
        try:
            out[name] = convert(value)
        except ValueError:
            raise click.BadParameter(f"'{text}': '{value}' is not a whole number", param_hint=flag) from None
    return out


def batches(sweep: str) -> list[int]:
    try:
        batches = [int(b) for b in sweep.split(",")]
    except ValueError:
        batches = []
    if not batches or any(not 1 <= b <= MAX_SIZE for b in batches):
        raise click.BadParameter(f"'{sweep}' should be batch sizes from 1 to 2^40: 1,2,4,8", param_hint="--sweep")
    return batches


def refuse_unused(given: dict, unused: bool, needs: str) -> None:
    """Options that would be silently ignored are refused: each one named, with what it needs."""
    named = [flag for flag, value in given.items() if value not in (None, False)]
    if unused and named:
        raise click.UsageError(f"{', '.join(named)} {'has' if len(named) == 1 else 'have'} no effect without "
                               f"{needs}")


def budget(gpu_name: str | None, memory_size: str | None):
    """--gpu NAME or --memory SIZE: (the bytes judged against, the catalog's card or None)."""
    from archcalc.analysis.gpus import gpu

    if gpu_name is not None:
        card = gpu(gpu_name)
        return card.capacity, card
    capacity = size(memory_size, "--memory")
    if not capacity:
        raise click.BadParameter(f"'{memory_size}': a budget must be more than 0 bytes", param_hint="--memory")
    return capacity, None


def size(text: str | None, flag: str) -> int | None:
    from archcalc.units import parse_bytes

    if text is None:
        return None
    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=flag) from None


def dtype_option(fn):
    """--dtype: the precision floating-point tensors are priced at."""
    return click.option("--dtype", type=click.Choice(list(PRECISIONS)), default=None,
                        help="Price floating-point tensors at this precision; mixed: fp16 with fp32 master "
                             "weights and optimizer state [default: as in the model; a 16-bit config: "
                             "mixed at its width, as LLMs are trained].")(fn)


def attention_option(fn):
    """--attention: the kernel a config's attention is trained and run with (``sources.KERNELS``)."""
    from archcalc.frontends.sources import KERNELS

    return click.option("--attention", type=click.Choice(list(KERNELS)), default=None,
                        help="A config's attention kernel: eager keeps the scores and probabilities for "
                             "backward (transformers' attn_implementation=\"eager\"); sdpa and flash keep the "
                             "output and a log-sum-exp per row (PyTorch's flash kernel, FlashAttention-2) "
                             "[default: sdpa, as transformers runs a model]. A design says /fused per ATTN; "
                             "an ONNX file runs as exported.")(fn)


def shape_options(fn):
    """--dim and --input: how symbolic dims get their values (--batch is each command's own)."""
    fn = click.option("--input", "inputs", multiple=True, metavar="NAME=1x3x224x224",
                      help="Set a whole input's shape.")(fn)
    fn = click.option("--dim", "dims", multiple=True, metavar="NAME=VALUE",
                      help="Bind a named symbolic dim (e.g. --dim sequence=128).")(fn)
    return fn


def memory_options(default_runtime: str | None):
    """--mode, --optimizer, --runtime, --runtime-overhead, --workspace."""

    def add(fn):
        fn = click.option("--runtime-overhead", default=None, metavar="SIZE",
                          help="Replace the runtime's constant (e.g. 1.5GiB).")(fn)
        fn = click.option("--runtime", "runtime_name", type=click.Choice(list(RUNTIMES)), default=default_runtime,
                          show_default=default_runtime is not None,
                          help="Runtime whose constant and allocator rounding apply"
                               + ("" if default_runtime else " [default: onnxruntime-cpu for inference, "
                                  "pytorch-cuda for a training step, as `fit` prices them]") + ".")(fn)
        fn = optimizer_option(None)(fn)
        return fn

    return add


def optimizer_option(default: str | None):
    """--optimizer: whose state a training step holds; ``default`` None where the option only
    applies with --mode train (it is refused otherwise, so no value may stand in for it)."""
    return click.option("--optimizer", default=default, show_default=default is not None,
                        help="Optimizer state counted in training"
                             + ("" if default else f" [default: {DEFAULT_OPTIMIZER}, for every command]")
                             + ": sgd, momentum, nesterov, adagrad, rmsprop, rmsprop-momentum, rmsprop-centered, "
                               "adam, adamw, adam-amsgrad ...")


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange, refusing NaN (which passes every comparison it makes) and infinities."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def serve_options(fn):
    """The options of ``fit --mode serve``: the context, the parallelism and the runtime's settings."""
    fn = click.option("--context", type=click.IntRange(min=1, max=MAX_SIZE), default=None,
                      help="Serve: tokens per sequence (vLLM's max_model_len).")(fn)
    fn = click.option("--sequences", type=click.IntRange(min=1, max=MAX_SIZE), default=None,
                      help="Serve: this many sequences at once; find the longest context each may have "
                           "(with --context).")(fn)
    fn = click.option("--tp", type=click.IntRange(min=1, max=1024), default=1, show_default=True,
                      help="Serve: tensor-parallel GPUs (each holds its share of weights and KV heads).")(fn)
    fn = click.option("--kv-dtype", default="auto", show_default=True,
                      help="Serve: the KV cache's element type: auto, fp16, bf16, fp32, fp8, fp8_e5m2, int8.")(fn)
    fn = click.option("--serve-runtime", type=click.Choice(["vllm", "plain"]), default="vllm", show_default=True,
                      help="Serve: vLLM's accounting, or archcalc's own (weights, prefill peak, runtime "
                           "constant).")(fn)
    fn = click.option("--engine", type=click.Choice(["v1", "v0"]), default="v1", show_default=True,
                      help="Serve: vLLM's engine (V0: vLLM up to 0.7; its profile run and block count "
                           "differ).")(fn)
    fn = click.option("--gpu-memory-utilization", "utilization", type=FiniteFloatRange(0, 1, min_open=True),
                      default=None, help="Serve: vLLM's share of the GPU [default: 0.9; plain: 1].")(fn)
    fn = click.option("--block-size", type=click.IntRange(min=1, max=1 << 20), default=None,
                      help="Serve: tokens a KV block holds [default: 16; 64 for latent attention on Hopper].")(fn)
    fn = click.option("--max-num-batched-tokens", "batched_tokens", type=click.IntRange(min=1, max=MAX_SIZE),
                      default=None, help="Serve: the prefill budget the profile run takes [default: vLLM's].")(fn)
    fn = click.option("--max-num-seqs", "max_seqs", type=click.IntRange(min=1, max=MAX_SIZE), default=None,
                      help="Serve: sequences a batch holds [default: vLLM's].")(fn)
    fn = click.option("--non-torch", default=None, metavar="SIZE",
                      help="Serve: memory outside torch's allocator (CUDA context, NCCL) [default: per "
                           "engine].")(fn)
    return fn


INTERNAL_ERROR = 3  # exit codes: 0 a result (fits), 1 does not fit, 2 bad input, 3 archcalc's bug


def _crash_site(exc: BaseException) -> str:
    """The exception and the innermost frame it came from, on one line."""
    import traceback

    from archcalc.units import printable

    frames = traceback.extract_tb(exc.__traceback__)
    at = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return printable(f"{type(exc).__name__}: {str(exc)[:160]}{at}")


class OneLineErrors(click.Group):
    """click's own usage errors as one ``error:`` line too (the flag is the place), and an interrupt
    as "interrupted" with exit code 130."""

    def parse_args(self, ctx, args):
        if not args:  # bare `archcalc` asks what there is: the help on stdout, exit 0 (click 8.2 and
            click.echo(ctx.get_help(), color=ctx.color)  # later make it a usage error, exit 2)
            ctx.exit(0)
        return super().parse_args(ctx, args)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from archcalc.units import printable

        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            click.echo(f"error: {printable(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("error: interrupted: nothing half-written was left behind", err=True)
            sys.exit(130)
        except Exception as exc:  # not the input's fault: archcalc's own bug, said so, with a code of its own
            if os.environ.get("ARCHCALC_STRICT"):
                raise  # the tests want the traceback itself
            click.echo(f"error: a bug in archcalc, not in your input ({_crash_site(exc)}): please report it "
                       "with this command line", err=True)
            sys.exit(INTERNAL_ERROR)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)
