"""The strategies ``archcalc plan`` weighs on a cluster, and the one ``--strategy`` names.

Every way to factor the GPUs into data x tensor x pipeline parallel degrees (tensor parallel within
a node, as Megatron-LM places it, and only where the graph has blocks to split evenly), each with
ZeRO stages 0-3, checkpointing none / selective (when the graph has attention to recompute) /
op and full (when it has repeated units), and for ZeRO-3 the CPU offload of the optimizer (and of the
parameters). On several nodes ZeRO-3 also shards within a node and replicates across (hybrid).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

from archcalc.analysis.patterns import attention_core
from archcalc.analysis.plan.checkpointing import COUNTED, MODES, PER_STAGE, known_mode
from archcalc.analysis.plan.gpu_memory import BALANCES, ENGINES, OFFLOADS, SCHEDULES, Strategy
from archcalc.analysis.plan.planner import Planner, PlanRow, divisors
from archcalc.errors import ArchcalcError, InputError


def candidates(planner: Planner, gpus: int, per_node: int, micro_batches: int | None) -> Iterator[Strategy]:
    units = len(planner.units)
    repeated = any(u.repeated for u in planner.units.units)
    view = planner.view(1, False)
    attention = bool(attention_core(view.shaped, view.results)[2])
    modes = ["none"] + (["selective"] if attention else []) + (["op", "full"] if repeated else [])
    for tp in divisors(min(per_node, gpus)):
        if tp > 1 and not _splits(planner, tp):
            continue
        for pp in divisors(gpus // tp):
            if pp > max(1, units // 2):  # at least two units a stage
                continue
            dp = gpus // (tp * pp)
            m = micro_batches or (2 * pp if pp > 1 else 1)
            for zero in _zero_stages(dp, pp):
                for ckpt in modes:
                    base = Strategy(dp=dp, zero=zero, tp=tp, sp=tp > 1, pp=pp, micro_batches=m, checkpoint=ckpt)
                    yield base
                    if zero == 3:
                        yield replace(base, offload="optimizer")
                        if dp > per_node and dp % per_node == 0:
                            yield replace(base, shard=per_node)


def _zero_stages(dp: int, pp: int) -> tuple[int, ...]:
    """The ZeRO stages searched: none without data parallelism; with a pipeline, not ZeRO-3 -- FSDP
    that reshards after forward would gather every unit again for each micro-batch, so torchtitan
    turns it off when pipelining (torchtitan/distributed/fsdp.py
    ``get_fsdp_reshard_after_forward_policy``: "default" is ``not pp_enabled``), which is ZeRO-2 here,
    and DeepSpeed refuses ZeRO-2/3 with its pipeline (``--strategy`` still judges one)."""
    if dp == 1:
        return (0,)
    return (0, 1, 2) if pp > 1 else (0, 1, 2, 3)


def _splits(planner: Planner, tp: int) -> bool:
    try:
        planner.view(tp, True)
        return True
    except ArchcalcError:
        return False


# Strategies x layers a search judges at most: each strategy's micro-batch solve walks every layer a
# few times and its pipeline balancing many candidate stages, about 12 us a layer on this project's
# 2-core machine: Llama-3.1-405B's 3,910 layers (eager attention) under the 495 strategies of 2,048
# GPUs in nodes of 8 was 1.9 million, 16 s; its 1,894 (fused) under 288 are 0.5 million, 4 s; a
# 190-layer decoder's 5,894 under 501 (4,096 GPUs) 3.0 million, 34 s.
SEARCH_BUDGET = 3_000_000


def search(
    planner: Planner,
    gpus: int,
    per_node: int,
    capacity: int,
    global_batch: int | None,
    micro_batches: int | None = None,
) -> list[PlanRow]:
    found = list(candidates(planner, gpus, per_node, micro_batches))
    layers = len(planner.ests[0].results)
    if len(found) * layers > SEARCH_BUDGET:
        raise InputError(
            f"{planner.graph.source}: {len(found)} strategies for {gpus} GPUs, each judged over {layers:,} "
            "layers, is past what a search does in a minute; give the one to judge with --strategy (e.g. "
            f"'{found[-1].label()}'), search fewer --gpus, or give --nodes (tensor parallelism stays in a node)")
    rows = []
    for s in found:
        try:
            rows.append(planner.row(s, capacity, global_batch))
        except InputError:
            continue  # a global batch this degree does not divide
    return sorted(rows, key=rank_key)


def rank_key(row: PlanRow) -> tuple:
    """Fitting rows first, by the compute they add (``PlanRow.overhead``: recompute and the pipeline's
    bubble, as shares of the step), then the least traffic per sample, the largest micro-batch; rows
    that do not fit by their shortfall."""
    if not row.fits:
        return (1, row.total - row.capacity)
    samples = row.micro_batch * row.accumulation * row.strategy.dp
    return (0, round(row.overhead, 3), sum(row.communication.values()) / samples, -row.micro_batch)


WORD = re.compile(r"(dp|tp|pp|cp|zero|hybrid|micro|x)(\d+)$")
NAMED = {"ckpt": MODES, "checkpoint": MODES, "offload": OFFLOADS, "engine": ENGINES, "balance": BALANCES}
FIELDS = {"hybrid": "shard", "micro": "micro_batches", "x": "chunks", "ckpt": "checkpoint"}
FORMS = (f"dpN tpN ppN cpN zeroN (ZeRO stage 0-3) hybridN (shard group) microN xN (interleaved chunks), sp, "
         f"{'|'.join(SCHEDULES)}, "
         + ", ".join(f"{k}={'|'.join(v)}" + ("|everyN|uniformN|blockN" if k == "ckpt" else "")
                     for k, v in NAMED.items() if k != "checkpoint"))


def _word(word: str) -> tuple[str, object] | None:
    """The field and value one word of a strategy sets (None: not a word of one)."""
    m = WORD.match(word)
    if m:
        name, n = m.group(1), int(m.group(2))
        ok = n <= 3 if name == "zero" else n >= 1
        return (FIELDS.get(name, name), n) if ok else None
    if word == "sp":
        return "sp", True
    if word in SCHEDULES:
        return "schedule", word
    key, _, value = word.partition("=")
    if key in ("ckpt", "checkpoint"):
        return ("checkpoint", value) if known_mode(value) else None
    return (FIELDS.get(key, key), value) if value in NAMED.get(key, ()) else None


# The forms ``Strategy.label`` prints (``tp2+sp``, ``interleavedx2``, ``ckpt full``, ``deepspeed``), so
# a row of ``archcalc plan`` pasted into --strategy reads as the row.
LABEL_FORMS = [(re.compile(r"\+sp\b"), " sp"), (re.compile(r"\binterleavedx(\d+)\b"), r"interleaved x\1"),
               (re.compile(r"\b(ckpt|offload|balance) (\w+)"), r"\1=\2"),
               (re.compile(r"(?<![=\w])(deepspeed|pytorch|torchtitan|megatron)\b"), r"engine=\1")]


def _words(text: str) -> list[str]:
    for form, words in LABEL_FORMS:
        text = form.sub(words, text)
    return text.replace(",", " ").split()


def parse_strategy(text: str, gpus: int) -> Strategy:
    """``dp8 zero3``, ``tp2 sp pp4 1f1b micro16 ckpt=full``, ``dp4 zero3 offload=optimizer``: the
    degrees given (the data-parallel one, if left out, is what the GPUs leave). Read and checked
    word by word before any analysis."""
    kw: dict = {}
    if not text.strip():
        raise InputError(f"--strategy {text!r}: empty; name one, e.g. 'dp8 zero3 ckpt=full', or leave it out to "
                         "search them all")
    for word in _words(text):
        field = _word(word)
        if field is None:
            raise InputError(f"--strategy {text!r}: cannot read '{word}'; its words are {FORMS} "
                             "(e.g. 'dp8 zero3 ckpt=full', 'tp2 sp pp4 1f1b micro16')")
        kw[field[0]] = field[1]
    tp, pp, cp = kw.get("tp", 1), kw.get("pp", 1), kw.get("cp", 1)
    kw.setdefault("dp", max(gpus // (tp * pp * cp), 1))
    if kw["dp"] * tp * pp * cp != gpus:
        raise InputError(f"--strategy {text!r}: dp{kw['dp']} x tp{tp} x pp{pp} x cp{cp} = "
                         f"{kw['dp'] * tp * pp * cp} GPUs, but --gpus {gpus}")
    if pp > 1:
        kw.setdefault("micro_batches", 2 * pp)
    _no_effect(text, kw, tp, pp)
    return Strategy(**kw)


def _no_effect(text: str, kw: dict, tp: int, pp: int) -> None:
    """Words that would change nothing, or name what no engine runs, are refused rather than ignored."""
    if kw.get("sp") and tp == 1:
        raise InputError(f"--strategy {text!r}: sp splits the sequence over tensor-parallel ranks (Megatron-LM's "
                         "sequence parallelism); give tpN with N > 1, or drop sp")
    if kw.get("offload") == "params" and kw.get("zero", 0) < 3:
        raise InputError(f"--strategy {text!r}: offload=params moves sharded parameters to the host, which only "
                         "ZeRO-3 / FSDP full sharding has; add zero3, or use offload=optimizer")
    counted = COUNTED.match(kw.get("checkpoint", ""))
    if counted and counted[1] in PER_STAGE and pp > 1:
        raise InputError(f"--strategy {text!r}: ckpt={counted[0]} counts layers within each pipeline stage, "
                         "as Megatron-LM does, which archcalc judges without a pipeline only; use ckpt=full or "
                         "everyN with ppN")
    if (kw.get("chunks", 1) > 1 or kw.get("schedule") == "interleaved") and pp == 1:
        raise InputError(f"--strategy {text!r}: interleaved chunks are pipeline stages' virtual stages; give ppN "
                         "with N > 1")


@dataclass(frozen=True)
class PlanResult:
    """What ``archcalc plan`` found: the rows (ranked; with ``--strategy``, the one judged), what they
    were judged on, and the runtime's constant each GPU adds."""

    rows: list[PlanRow]
    meta: dict
    constant: int
    judged: bool = False  # one named strategy, not a search


def plan_result(
    planner: Planner,
    capacity: int,
    gpus: int,
    nodes: int,
    global_batch: int | None = None,
    micro_batches: int | None = None,
    strategy: str | None = None,
) -> PlanResult:
    chosen = parse_strategy(strategy, gpus) if strategy is not None else None  # before the graph is analysed
    per_node = gpus // nodes
    meta = {
        "gpus": gpus,
        "nodes": nodes,
        "capacity": capacity,
        "global_batch": global_batch,
        "optimizer": planner.optimizer,
        "dtype": planner.dtype,
        "device": planner.device,
        "runtime": planner.runtime,
        "params": planner.ests[0].totals.params,
        "largest_layer_params": max((r.params for r in planner.ests[0].layers_list), default=0),
        "batch_fixed": planner.fixed,
        "units": {"source": planner.units.source, "names": [u.name for u in planner.units.units]},
    }
    planner.check_global_batch(global_batch)
    if chosen:
        units = len(planner.units.units)
        if chosen.pp * chosen.chunks > units:
            raise InputError(f"--strategy {strategy!r}: pp{chosen.pp} x {chosen.chunks} chunks needs "
                             f"{chosen.pp * chosen.chunks} units to place, and the model has {units}: fewer "
                             "stages or chunks")
        # A count the user states (--micro-batches, or microN) is run as stated, with a global batch too.
        stated = bool(micro_batches) or any(w.startswith("micro") for w in _words(strategy or ""))
        s = replace(chosen, micro_batches=micro_batches) if micro_batches else chosen
        return PlanResult([planner.row(s, capacity, global_batch, stated)], meta, planner.constant, judged=True)
    rows = search(planner, gpus, per_node, capacity, global_batch, micro_batches)
    return PlanResult(rows, meta, planner.constant)
