"""Large fuzz run over crafted graphs (issue 16): random mutations of valid ONNX files
(re-signed), NIR and netx files through the CLI; counts clean successes, clean one-line
errors and bad outcomes (tracebacks, internal errors). tests/test_fuzz_graphs.py runs a
bounded sample of the same cases in CI.

    python benchmarks/bench_fuzz.py [--onnx 3000] [--nir 1000] [--netx 1000] [--seed 0]
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzzing  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", type=int, default=3000)
    ap.add_argument("--nir", type=int, default=1000)
    ap.add_argument("--netx", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="snncompile-fuzz-") as work:
        outcomes = fuzzing.fuzz(Path(work), args.onnx, args.nir, args.netx, args.seed)
    wall = time.perf_counter() - start
    by_format = collections.defaultdict(collections.Counter)
    for o in outcomes:
        by_format[o.case.split()[0]][o.kind] += 1
    print(f"{len(outcomes)} CLI outcomes from {args.onnx} ONNX + {args.nir} NIR + {args.netx} netx mutated "
          f"files (seeds from {args.seed}) in {wall:.0f} s")
    print("| format | ok | error (one line) | bad |\n|---|---|---|---|")
    for fmt, c in sorted(by_format.items()):
        print(f"| {fmt} | {c['ok']} | {c['error']} | {c['bad']} |")
    for o in outcomes:
        if o.kind == "bad":
            print(f"BAD {o.case}: {o.detail}")
    return int(any(o.kind == "bad" for o in outcomes))


if __name__ == "__main__":
    sys.exit(main())
