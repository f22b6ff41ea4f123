"""The training step's tensors in the order an engine makes and frees them, played into an allocator
(``reserved``'s note says what is modelled and from which source)."""

from __future__ import annotations

from collections import defaultdict

from archcalc.analysis.memory import loss as ce
from archcalc.analysis.memory.model_states import FP32
from archcalc.analysis.plan.fsdp import last_unit_kept

DEFAULT, ALL_GATHER, REDUCE_SCATTER = 0, 1, 2  # the streams a step allocates on (reserved.STREAMS names them)
# DDP's gradient buckets (torch/nn/parallel/distributed.py): the first at most 1 MiB
# (dist._DEFAULT_FIRST_BUCKET_BYTES), the rest at most bucket_cap_mb = 25 MiB, filled with the
# parameters in reverse order (a parameter never split), each one flat tensor the Reducer allocates
# when DDP is built and keeps (gradient_as_bucket_view=False: the gradients are tensors of their own).
FIRST_BUCKET, BUCKET = 1 << 20, 25 << 20


def ddp_buckets(sizes: list[int]) -> list[int]:
    """The bytes of each of DDP's buckets over gradients of ``sizes`` bytes, in bucket order."""
    out, cap, current = [], FIRST_BUCKET, 0
    for size in sizes:
        if current and current + size > cap:
            out.append(current)
            current, cap = 0, BUCKET
        current += size
    return out + ([current] if current else [])


class _Walk:
    def __init__(self, step, r, fsdp: bool, upcast: int, adam_slots: int):
        self.st, self.r, self.fsdp, self.upcast, self.slots = step, r, fsdp, upcast, adam_slots
        self.ddp = step.s.zero == 0 and step.s.replicas > 1
        p = step.params
        self.elements = [int(x) for x in p.sizes]
        self.layer_of = [int(x) for x in p.at]
        group = step.s.group if fsdp else 1
        self.shard = [-(-e // group) for e in self.elements]
        self.width = step.prec.width
        unit = [int(p.unit_of[a]) if p.repeated[p.unit_of[a]] else -1 for a in self.layer_of]
        self.unit_params: dict[int, list[int]] = defaultdict(list)
        for k, u in enumerate(unit):
            self.unit_params[u].append(k)
        self.first = {int(p.unit_start[u]): int(u) for u in range(len(p.unit_start)) if p.repeated[u]}
        self.last = {int(p.unit_stop[u]) - 1: int(u) for u in range(len(p.unit_start)) if p.repeated[u]}
        self.order = sorted(self.first.values())
        self.made_at: dict[int, list[int]] = defaultdict(list)
        for k, a in enumerate(self.layer_of):
            self.made_at[a].append(k)
        self.starts: dict[int, list] = defaultdict(list)
        self.ends: dict[int, list] = defaultdict(list)
        for buf in step.bufs:
            self.starts[buf.start].append(buf.tensor)
            self.ends[buf.end].append(buf.tensor)
        self.grad_made: dict[int, list[str]] = defaultdict(list)
        self.grad_freed: dict[int, list[str]] = defaultdict(list)
        for name, producer, last in step.spans:
            self.grad_made[last].append(name)
            self.grad_freed[producer].append(name)
        self.first_saver = defaultdict(list)
        for storage, layers in step.savers.items():
            self.first_saver[layers[0]].append(storage)
        self.held = {st for st in step.savers if st not in step.dropped}
        self.held |= {st for names in step.cached.values() for st in names}
        self.gathered: set[int] = set()  # FSDP units whose parameters are unsharded now

    # -- parameters -------------------------------------------------------------------------------
    def persistent(self) -> None:
        for name in self.st.inputs:
            self.r.take(("input", name), self.st.size(name))
        for k, e in enumerate(self.elements):
            if self.fsdp:  # FSDP2's shard: the master weight itself under mixed precision
                self.r.take(("shard", k), self.shard[k] * self.width * self.upcast)
            else:
                self.r.take(("weight", k), e * self.width)
                self.r.take(("master", k), e * FP32 if self.st.prec.mixed else 0)
        if self.ddp:
            for k, size in enumerate(ddp_buckets([e * self.width for e in self.elements][::-1])):
                self.r.take(("bucket", k), size)

    def gather(self, u: int) -> None:
        if u in self.gathered or u not in self.unit_params:
            return
        ks = self.unit_params[u]
        self.r.take(("ag", u), sum(self.elements[k] for k in ks) * self.width, ALL_GATHER)
        for k in ks:
            self.r.take(("full", k), self.elements[k] * self.width)
        self.r.drop(("ag", u))
        self.gathered.add(u)

    def reshard(self, u: int) -> None:
        for k in self.unit_params.get(u, []):
            self.r.drop(("full", k))
        self.gathered.discard(u)

    def reduce(self, u: int) -> None:
        """FSDP2's foreach_reduce: the reduce-scatter input (the unit's gradients at the reduce width)
        on the default stream, the unsharded gradients freed, the output -- the sharded gradients --
        on the reduce-scatter stream."""
        ks = self.unit_params.get(u, [])
        self.r.take(("rs", u), sum(self.elements[k] for k in ks) * self.width * self.upcast)
        for k in ks:
            self.r.drop(("pgrad", k))
        self.r.take(("sgrad", u), sum(self.shard[k] for k in ks) * self.width * self.upcast, REDUCE_SCATTER)
        self.r.drop(("rs", u))
        self.reshard(u)

    def _neighbour(self, u: int, step: int) -> int | None:
        k = self.order.index(u) + step
        return self.order[k] if 0 <= k < len(self.order) else None

    # -- the step ---------------------------------------------------------------------------------
    def zero_grad(self) -> None:
        for key in [k for k in self.r.live if k[0] in ("pgrad", "sgrad")]:
            self.r.drop(key)

    def forward(self) -> None:
        if self.fsdp:
            self.gather(-1)  # the root: gathered for the whole step
        for i in range(self.st.n):
            if self.fsdp and i in self.first:
                self.gather(self.first[i])
                nxt = self._neighbour(self.first[i], 1)
                if nxt is not None:
                    self.gather(nxt)
            self._forward_layer(i, recompute=False)
            kept = last_unit_kept(self.st.s) and self.last.get(i) == self.order[-1]
            if self.fsdp and i in self.last and not kept:
                self.reshard(self.last[i])

    def _forward_layer(self, i: int, recompute: bool) -> None:
        st = self.st
        for t in self.starts.get(i, []):
            if not recompute or t in st.dropped or t not in st.savers:
                self.r.take(("buf", t), st.size(t))
        if not recompute or st.dropped_extra[i]:
            self.r.take(("extra", i), int(st.extra[i]))
        if i in st.losses and not recompute:
            self._loss(i, "forward")
        for t in self.ends.get(i, []):
            if t not in self.held and not (recompute and t in st.dropped):
                self.r.drop(("buf", t))
        if st.dropped_extra[i] and not recompute:
            self.r.drop(("extra", i))

    def _loss(self, i: int, phase: str) -> None:
        _, width, kind = self.st.losses[i]
        elements = self.st.logit_elements[i]  # at the replayed micro-batch
        logits = self.st.results[i].layer.outputs[0]
        for sign, name, size in ce.steps(kind, phase, width):
            key = ("buf", logits) if name == ce.LOGITS else ("grad", logits) if name == ce.GRAD else ("loss", name)
            if sign == "+":
                self.r.take(key, elements * size)
            else:
                self.r.drop(key)

    def backward(self) -> None:
        st, done_runs = self.st, set()
        for i in reversed(range(st.n)):
            if st.results[i].folded:
                continue
            if self.fsdp and i in self.last:
                self.gather(self.last[i])
                prv = self._neighbour(self.last[i], -1)
                if prv is not None:
                    self.gather(prv)
            k = int(st.run_of[i])
            if st.bounds and st.checkpointed[k] and k not in done_runs:
                done_runs.add(k)
                self._recompute(*st.bounds[k])
            self._backward_layer(i)
            if self.fsdp and i in self.first:
                self.reduce(self.first[i])
        if self.fsdp:
            self.reduce(-1)
        for key in [k for k in self.r.live if k[0] in ("buf", "grad", "extra", "loss")]:
            self.r.drop(key)

    def _recompute(self, a: int, e: int) -> None:
        """A checkpointed run's forward again, before its backward: what it dropped is made again and
        held; the rest is freed as it was (and what outlives the run, at its end: PyTorch stops
        recomputing once every saved tensor is back)."""
        before = set(self.r.live)
        for j in range(a, e):
            self._forward_layer(j, recompute=True)
        for key in [k for k in self.r.live if k not in before and k[0] == "buf" and k[1] not in self.st.dropped]:
            self.r.drop(key)
        for storage in self.st.cached.get(int(self.st.run_of[a]), ()):
            self.r.drop(("buf", storage))

    def _backward_layer(self, i: int) -> None:
        st = self.st
        if i in st.losses:
            self._loss(i, "backward")
        for name in self.grad_made.get(i, []):
            self.r.take(("grad", name), st.size(name))
        for k in self.made_at.get(i, []):
            self.r.take(("pgrad", k), self.elements[k] * self.width)
        for storage in self.first_saver.get(i, []):
            self.r.drop(("buf", storage))
        self.r.drop(("extra", i))
        for name in self.grad_freed.get(i, []):
            self.r.drop(("grad", name))

    def optimizer_step(self) -> None:
        """Adam's state, made lazily by the first step (``torch.zeros_like`` of each parameter), and
        the step's temporaries as ``model_states.step_temporaries`` prices them: the multi-tensor
        form's one list the size of every parameter, the per-tensor form's two of one parameter at a
        time."""
        prec, sizes = self.st.prec, self.shard if self.fsdp else self.elements
        for k, e in enumerate(sizes):
            self.r.take(("adam", k), self.slots * e * prec.state_width)
        if not self.slots or not prec.optimizer.startswith("adam"):
            return
        for k, e in enumerate(sizes):
            for j in range(1 if prec.impl == "foreach" else 2):
                self.r.take(("temp", k, j), e * prec.state_width)
            if prec.impl != "foreach":
                self.r.drop(("temp", k, 0))
                self.r.drop(("temp", k, 1))
        for key in [k for k in self.r.live if k[0] == "temp"]:
            self.r.drop(key)


def run_steps(step, r, fsdp: bool, upcast: int, adam_slots: int) -> None:
    """Two training steps of ``step`` into the replay ``r``."""
    w = _Walk(step, r, fsdp, upcast, adam_slots)
    w.persistent()
    for _ in range(2):
        w.zero_grad()
        w.forward()
        w.backward()
        w.optimizer_step()
