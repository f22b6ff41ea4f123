"""Hostile input on the newer surfaces (tests/fuzz_surfaces.py), at a fixed seed in every run: mutated
configs of every family, transformer designs, malformed control flow, plan strategies and serve
options. The same oracle as test_fuzz.py; benchmarks/fuzz.py --surface new is the long run."""

from __future__ import annotations

import fuzz_surfaces
import pytest

CASES = 150


@pytest.fixture(scope="module")
def failures():
    return fuzz_surfaces.fuzz(CASES, seed=20261207)


@pytest.mark.parametrize("kind", fuzz_surfaces.KINDS)
def test_no_case_breaks_archcalc(failures, kind):
    assert failures["cases"][kind] > 0, f"no {kind} case drawn"
    assert not failures[kind], "\n".join(f"{problem}\n  archcalc {' '.join(args)}" for args, problem in failures[kind])
