"""Wall time of ``snncompile demo`` (target: under 3 minutes on 2 cores) and its figures.

Runs the installed command in a child process, as ``make demo`` does (start-up and imports
included), then prints a Markdown table for benchmarks/RESULTS.md from the summary JSON
the demo writes.

    .venv/bin/python benchmarks/bench_demo.py [--lava-samples N]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lava-samples", type=int, default=None)
    args = parser.parse_args()
    exe = Path(sys.executable).with_name("snncompile")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(exe), "demo", "--out", tmp]
        if args.lava_samples is not None:
            cmd += ["--lava-samples", str(args.lava_samples)]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        s = json.loads((Path(tmp) / "mnist_convsnn.summary.json").read_text())
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    print("| demo wall (s) | test digits | Lava digits | PyTorch | float | fixed | Lava | Lava precision "
          "| spike agreement | SOPs/sample | energy/sample | ANN/sample |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {wall:.0f} | {s['n_test']} | {s['n_lava']} | {pct(s['torch_accuracy'])} | "
          f"{pct(s['float_accuracy'])} | {pct(s['fixed_accuracy'])} | {pct(s['lava_accuracy'])} | "
          f"{s['lava_precision'] or '-'} | {pct(s['lava_spike_agreement'])} | {s['synops_per_sample']:,.0f} | "
          f"{s['energy_per_sample_j'] * 1e9:.0f} nJ | {s['ann_energy_per_sample_j'] * 1e9:.0f} nJ |")
    print("stage seconds:", {k: round(v, 1) for k, v in s["seconds"].items()})


if __name__ == "__main__":
    main()
