"""The long fuzz run: tests/fuzzing.py's generators for many cases (100,000 by default), totals per
kind, and each failure's command line. The same oracle as tests/test_fuzz.py: no traceback, no
hang, no negative or non-finite number, every error naming its file or flag.
``--surface new`` runs tests/fuzz_surfaces.py's generators instead: configs, transformer designs, control
flow, plan strategies and serve options.
Usage: python benchmarks/fuzz.py [--cases 100000] [--seed 0] [--surface onnx|new] [--kinds plan,serve]
[--json out.json]"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import fuzz_surfaces  # noqa: E402
import fuzzing  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--surface", choices=["onnx", "new"], default="onnx")
    ap.add_argument("--kinds", default=",".join(fuzz_surfaces.KINDS),
                    help=f"with --surface new: which of {', '.join(fuzz_surfaces.KINDS)} (one per process, "
                         "for 20,000 of each on as many cores)")
    args = ap.parse_args()
    kinds = tuple(k for k in args.kinds.split(",") if k)
    if not kinds or set(kinds) - set(fuzz_surfaces.KINDS):
        ap.error(f"--kinds {args.kinds!r}: name some of {', '.join(fuzz_surfaces.KINDS)}")
    start = time.perf_counter()
    if args.surface == "new":
        result = fuzz_surfaces.fuzz(args.cases, args.seed, kinds)
    else:
        result = fuzzing.fuzz(args.cases, args.seed)
    counts = result.pop("cases")
    seconds = time.perf_counter() - start
    for kind, n in counts.items():
        print(f"{kind:10} {n:7,} cases  {len(result[kind]):4} failures")
        for command, problem in result[kind][:10]:
            print(f"    {problem[:200]}\n      archcalc {' '.join(command)[:200]}")
    failures = sum(len(v) for v in result.values())
    print(f"{sum(counts.values()):,} cases, {failures} failures, {seconds:.0f} s (seed {args.seed})")
    if args.json:
        Path(args.json).write_text(json.dumps({"cases": counts, "failures": result, "seconds": seconds}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
