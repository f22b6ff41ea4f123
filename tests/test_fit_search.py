"""The largest-batch search: the answer is where the verdict turns, found from few analyses, and one
analysis per batch serves every GPU and mode asking."""

from __future__ import annotations

import pytest

from archcalc.analysis import estimate as estimate_module
from archcalc.analysis.estimate import Estimates
from archcalc.analysis.fit import FitSpec, fit_table, largest_batch
from archcalc.analysis.gpus import gpu
from archcalc.frontends.sources import load_graph

GiB = 1 << 30


@pytest.fixture()
def analyses(monkeypatch):
    """The batches analysed, in order."""
    seen: list[int | None] = []
    real = estimate_module.analyse

    def counted(graph, batch=None, *args, **kwargs):
        seen.append(batch)
        return real(graph, batch, *args, **kwargs)

    monkeypatch.setattr(estimate_module, "analyse", counted)
    return seen


@pytest.mark.parametrize("mode,optimizer", [("train", "adam"), ("train", "sgd"), ("inference", "sgd")])
@pytest.mark.parametrize("capacity", [1 * GiB, 6 * GiB, 15 * GiB])
def test_the_answer_is_where_the_verdict_turns(mode, optimizer, capacity):
    """Checked against the verdicts themselves on both sides of the answer, on a model whose training
    total bends (the optimizer step is the peak at small batches, the forward's end at large ones)."""
    spec = FitSpec(load_graph("resnet18"), capacity, mode, optimizer)
    best = largest_batch(spec)
    assert best is not None and best.fits
    fresh = FitSpec(load_graph("resnet18"), capacity, mode, optimizer)  # its own analyses, none shared
    assert fresh.verdict(best.batch).fits and not fresh.verdict(best.batch + 1).fits


def test_a_bent_line_is_settled_in_a_few_analyses(analyses):
    """ResNet-50's training total is not one line: batch 1 and 2 predict 482 on a T4, the answer is far
    below; the search settles it without walking the batch range."""
    spec = FitSpec(load_graph("resnet50"), gpu("T4").capacity, "train", "adam")
    best = largest_batch(spec)
    assert not spec.verdict(best.batch + 1).fits
    assert len(analyses) <= 10


def test_one_analysis_per_batch_serves_every_gpu_and_mode(analyses):
    graph = load_graph("resnet18")
    estimates = Estimates(graph)
    rows = fit_table(graph, [gpu(n) for n in ("T4", "A100-80GB", "H100-80GB")], "adam", estimates=estimates)
    assert len(analyses) == len(set(analyses))
    for row in rows:  # the shared analyses give what a search of its own gives
        for mode, batch in row.largest.items():
            alone = largest_batch(FitSpec(graph, row.capacity, mode, "adam"))
            assert batch == (alone.batch if alone else 0)
