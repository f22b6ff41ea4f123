"""Hostile input, generated: corrupted and mutated ONNX files, mutated designs, odd command-line
values, odd output paths and interrupted reports (tests/fuzzing.py). Every case must end without a
traceback or a hang, with no negative or non-finite number, and any error must name its file or
flag. benchmarks/fuzz.py runs the same generators for 100,000 cases."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import fuzzing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FAST = ["bytes", "model", "design", "cli"]


def _check(kind: str, rng: random.Random) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        args, problem = fuzzing.run_case(kind, rng, Path(tmp))
    assert problem is None, f"{problem}\n  archcalc {' '.join(args)}"


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(FAST), rng=st.randoms(use_true_random=False))
def test_inputs_never_break_archcalc(kind, rng):
    _check(kind, rng)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["output", "interrupt"]), rng=st.randoms(use_true_random=False))
def test_outputs_are_written_whole_or_not_at_all(kind, rng):
    _check(kind, rng)
