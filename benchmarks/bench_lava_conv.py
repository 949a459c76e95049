"""One Lava Conv step: Lava 0.10's own conv (``lava.proc.conv.utils.conv``: torch, float32)
against the Lava target's Conv model (``targets/lava/procs/conv.py``: numpy einsum,
float64, exact), on the shapes our graphs use (convs, avg pools as depthwise convs).

    .venv/bin/python benchmarks/bench_lava_conv.py [--append]

Best of 3 repeats of 10 calls each, in one process (a Lava worker runs the same call once
per step). Binary spike input, 20 % active. ``--append`` adds the table to RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

import snncompile.targets.lava  # noqa: F401  (the import hook before any `lava` import)
from lava.proc.conv.utils import conv as lava_conv

from snncompile.targets.lava.procs.conv import exact_conv

#: (W, H, C_in, C_out, groups, kernel, stride)
CASES = [(28, 28, 1, 8, 1, 3, 1), (14, 14, 8, 16, 1, 3, 1), (32, 32, 64, 64, 1, 3, 1),
         (16, 16, 128, 128, 1, 3, 1), (16, 16, 256, 256, 256, 2, 2), (8, 8, 1024, 1024, 1024, 3, 1)]


def _ms(fn, repeats=3, calls=10) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--append", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for w_, h_, ci, co, g, k, s in CASES:
        x = (rng.random((w_, h_, ci)) < 0.2).astype(np.float64)
        w = rng.integers(-4, 4, (co, k, k, ci // g)).astype(np.float64)
        stock = _ms(lambda: lava_conv(x, w, (k, k), (s, s), (1, 1), (1, 1), g))
        ours = _ms(lambda: exact_conv(x, w, (s, s), (1, 1), (1, 1), g))
        assert np.array_equal(lava_conv(x, w, (k, k), (s, s), (1, 1), (1, 1), g), exact_conv(
            x, w, (s, s), (1, 1), (1, 1), g)), "the two convolutions differ"
        rows.append(f"| {w_}x{h_}x{ci} -> {co}, groups {g}, k{k} s{s} | {stock:.2f} | {ours:.2f} |")
    text = "\n".join([
        "| conv step (W x H x C_in -> C_out) | Lava 0.10 conv (torch float32), ms | ours (numpy float64), ms |",
        "|---|---|---|", *rows])
    print(text)
    if args.append:
        section = (f"\n\n## Lava Conv model: Lava's own conv vs the Lava target's (bench_lava_conv.py)\n\n"
                   f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}; "
                   f"shared 2-core machine under load from other jobs (load average "
                   f"{os.getloadavg()[0]:.0f}): absolute "
                   f"times are noisy, the ratio is the point. Same results checked on every case "
                   f"(groups up to 1024 run through Lava's conv here directly, not through Lava's int8 Var).\n\n"
                   f"{text}\n")
        path = Path(__file__).with_name("RESULTS.md")
        path.write_text(path.read_text().rstrip("\n") + section)


if __name__ == "__main__":
    main()
